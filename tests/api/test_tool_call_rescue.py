"""Tool-call robustness through the gateway, with the openai SDK: text tool calls of every style become real
ones (plain and streamed), double-encoded arguments are repaired, inline <think> becomes reasoning, and an
empty answer fails over like a 5xx."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = [{"role": "user", "content": "Weather in Paris? call tool"}]
STYLES = ("hermes", "function", "params", "kimi", "deepseek", "json", "args")


def tool_model(emulator, key: str, slug: str = "groq") -> None:
    add_provider(emulator, slug, [key], [{"model_id": "llama", "supports_tools": True}])


def final(client, **kwargs):
    """The whole streamed answer, assembled by the SDK's own stream helper (as agents read it)."""
    with client.chat.completions.stream(**kwargs) as stream:
        for _ in stream:
            pass
        return stream.get_final_completion()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("style", STYLES)
def test_a_text_tool_call_reaches_the_client_as_a_real_one(gateway, emulator, style, stream):
    tool_model(emulator, f"g;textcall={style}")
    client = gateway.openai()
    kwargs = {"model": "groq/llama", "messages": CALL, "tools": WEATHER}

    reply = final(client, **kwargs) if stream else client.chat.completions.create(**kwargs)

    choice = reply.choices[0]
    [call] = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "echo"})
    assert call.id.startswith("call_")
    assert not choice.message.content
    assert choice.finish_reason == "tool_calls"


def test_streamed_text_before_a_call_arrives_first_and_the_call_after(gateway, emulator):
    tool_model(emulator, "g;textcall=hermes:lead")
    chunks = list(gateway.openai().chat.completions.create(model="groq/llama", messages=CALL, tools=WEATHER,
                                                           stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "I will call the tool."
    assert "<tool_call>" not in text
    with_calls = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.tool_calls]
    with_text = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    assert with_calls and max(with_text) < min(with_calls)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_without_declared_tools_text_stays_text(gateway, emulator):
    tool_model(emulator, "g;thinktag")
    content = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    reply = gateway.openai().chat.completions.create(model="groq/llama", messages=[
        {"role": "user", "content": content}])

    assert reply.choices[0].message.content == f"Echo: {content}"
    assert reply.choices[0].message.tool_calls is None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_double_encoded_arguments_are_repaired(gateway, emulator, stream):
    tool_model(emulator, "g;doubleargs")
    client = gateway.openai()
    kwargs = {"model": "groq/llama", "messages": CALL, "tools": WEATHER}

    reply = final(client, **kwargs) if stream else client.chat.completions.create(**kwargs)

    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"city": "echo"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_inline_think_block_comes_back_as_reasoning(gateway, emulator, stream):
    tool_model(emulator, "g;thinktag")
    client = gateway.openai()
    messages = [{"role": "user", "content": "hi"}]

    if stream:
        chunks = [c for c in client.chat.completions.create(model="groq/llama", messages=messages, stream=True)
                  if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks)
    else:
        message = client.chat.completions.create(model="groq/llama", messages=messages).choices[0].message
        content, reasoning = message.content, message.model_extra["reasoning"]

    assert (content, reasoning) == ("Echo: hi", "Let me think about this.")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_empty_answer_fails_over_before_the_first_byte(gateway, emulator, stream):
    add_provider(emulator, "groq", ["g;empty"], ["llama"])
    add_provider(emulator, "mistral", ["m"], ["small"])
    add_chain("auto", ["groq/llama", "mistral/small"])
    client = gateway.openai()
    messages = [{"role": "user", "content": "hi"}]

    if stream:
        with client.chat.completions.with_streaming_response.create(model="auto", messages=messages,
                                                                    stream=True) as response:
            headers = response.headers
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        headers, text = raw.headers, raw.parse().choices[0].message.content

    assert text == "Echo: hi"
    assert headers["X-FreeLLM-Provider"] == "mistral"
    assert "groq/llama/groq-0 -> empty_answer" in headers["X-FreeLLM-Trail"]
    assert [c.provider for c in emulator.calls] == ["groq", "mistral"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_only_empty_answers_is_a_502(gateway, emulator, stream):
    add_provider(emulator, "groq", ["g;empty"], ["llama"])

    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="groq/llama", messages=[{"role": "user", "content": "hi"}],
                                                 stream=stream)

    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_responses_dialect_gets_the_rescue_too(gateway, emulator, stream):
    tool_model(emulator, "g;textcall=kimi")
    client = gateway.openai()
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER[0]["function"]["parameters"]}
    kwargs = {"model": "groq/llama", "input": "Weather in Paris? call tool", "tools": [tool]}

    if stream:
        with client.responses.stream(**kwargs) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(**kwargs)

    [call] = [item for item in response.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "echo"})
    assert not [item for item in response.output if item.type == "message"]
