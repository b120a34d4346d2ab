"""Anthropic Messages through the live gateway: the official anthropic SDK over real sockets, the emulator
behind (OpenAI wire), so every answer crossed both translators and the router."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
def coding(emulator):
    """Chain `coding`: groq first, cerebras behind it; both take tools and images."""
    caps = {"context_window": 131072, "supports_tools": True, "supports_vision": True, "supports_json": True}
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", **caps}])
    add_provider(emulator, "cerebras", ["c"], [{"model_id": "qwen", **caps}])
    add_chain("coding", ["groq/llama", "cerebras/qwen"])


def chat_calls(emulator):
    return [call for call in emulator.calls if call.path.endswith("/chat/completions")]


def set_key(slug: str, secret: str) -> None:
    from providers.models import ProviderKey

    key = ProviderKey.objects.get(provider__slug=slug)
    key.secret = secret
    key.save()


def test_create_answers_a_message_with_trail_headers(gateway, emulator, coding):
    client = gateway.anthropic()
    raw = client.messages.with_raw_response.create(
        model="coding", max_tokens=200, system=SYSTEM, extra_body={"temperature": 0.3},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
    )
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Echo: Hello there"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["X-FreeLLM-Provider"] == "groq" and raw.headers["X-FreeLLM-Attempts"] == "1"

    sent = chat_calls(emulator)[0].body
    assert sent["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Hello there"}]
    assert (sent["max_tokens"], sent["temperature"]) == (200, 0.3)


def test_bearer_token_as_claude_code_sends_it(gateway, emulator, coding):
    client = gateway.anthropic(auth_token=gateway.api_key)
    message = client.messages.create(model="coding", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Echo: hi"


def test_tools_round_trip(gateway, emulator, coding):
    client = gateway.anthropic()
    messages = [{"role": "user", "content": "Weather in Paris? call tool"}]
    first = client.messages.create(model="coding", max_tokens=200, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "echo"}

    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]},
    ]
    second = client.messages.create(model="coding", max_tokens=200, tools=[WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Tool said: 18C and sunny"
    sent = chat_calls(emulator)[-1].body
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": use.id, "content": "18C and sunny"}
    assert sent["messages"][-2]["tool_calls"][0]["id"] == use.id


def test_stream_tools_round_trip_with_the_exact_event_sequence(gateway, emulator, coding):
    client = gateway.anthropic()
    messages = [{"role": "user", "content": "Weather in Paris? call tool"}]
    with client.messages.stream(model="coding", max_tokens=200, tools=[WEATHER], messages=messages,
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        kinds = [event.type for event in stream]
        first = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "input_json" in kinds and "content_block_stop" in kinds
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use" and use.input == {"city": "echo"}
    assert first.usage.output_tokens > 0
    assert chat_calls(emulator)[0].body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    messages += [
        {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "is_error": True,
                                      "content": [{"type": "text", "text": "station offline"}]}]},
    ]
    with client.messages.stream(model="coding", max_tokens=200, tools=[WEATHER], messages=messages) as stream:
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert text == "Tool said: Error: station offline"
    assert second.stop_reason == "end_turn" and second.content[0].text == text


def test_stream_raw_events_ping_and_text_blocks(gateway, emulator, coding):
    resp = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.api_key,
                                                             "anthropic-version": "2023-06-01"},
                      json={"model": "coding", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "one two three"}]})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [(frame.split("\n")[0].removeprefix("event: "), json.loads(frame.split("\n")[1][6:]))
              for frame in resp.text.strip().split("\n\n")]
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert all(name == data["type"] for name, data in events)
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "Echo: one two three"
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_thinking_streams_as_a_thinking_block_and_asks_for_reasoning(gateway, emulator, coding):
    set_key("groq", "g;think=2")
    client = gateway.anthropic()
    with client.messages.stream(model="coding", max_tokens=2048, messages=[{"role": "user", "content": "why?"}],
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "thought 0. thought 1. "
    assert message.content[1].text == "Echo: why?"
    assert chat_calls(emulator)[0].body["reasoning_effort"] == "low"

    plain = client.messages.create(model="coding", max_tokens=2048, messages=[{"role": "user", "content": "why?"}],
                                   output_config={"effort": "high"})
    assert [(b.type, getattr(b, "thinking", None)) for b in plain.content][0] == ("thinking", "thought 0. thought 1. ")
    assert chat_calls(emulator)[1].body["reasoning_effort"] == "high"


def test_stop_sequences(gateway, emulator, coding):
    client = gateway.anthropic()
    message = client.messages.create(model="coding", max_tokens=50, stop_sequences=["STOP"],
                                     messages=[{"role": "user", "content": "say A STOP B"}])
    assert message.content[0].text == "Echo: say A "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")
    assert chat_calls(emulator)[0].body["stop"] == ["STOP"]


def test_image_blocks_reach_the_upstream_as_image_url_parts(gateway, emulator, coding):
    from tests.emulator.content import TINY_PNG_B64

    client = gateway.anthropic()
    client.messages.create(model="coding", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "what is this?"},
    ]}])
    parts = chat_calls(emulator)[0].body["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_B64}"}}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}


def test_count_tokens_calls_no_upstream(gateway, emulator, coding):
    client = gateway.anthropic()
    plain = client.messages.count_tokens(model="coding", messages=[{"role": "user", "content": "Hello there"}])
    with_tools = client.messages.count_tokens(model="coding", system=SYSTEM, tools=[WEATHER],
                                              messages=[{"role": "user", "content": "Hello there"}])
    assert 0 < plain.input_tokens < with_tools.input_tokens
    assert chat_calls(emulator) == []
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])


def test_error_classes_in_anthropics_envelope(gateway, emulator, coding):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        gateway.anthropic(api_key="wrong").messages.create(model="coding", max_tokens=5,
                                                           messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"

    client = gateway.anthropic()
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-chain", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "not_found_error"

    # max_tokens is required, as Anthropic has it (the SDK would not send such a request: raw HTTP).
    resp = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.api_key},
                      json={"model": "coding", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in resp.json()["error"]["message"]

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="coding", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "web_search_20250305" in caught.value.body["error"]["message"]

    resp = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.api_key},
                      content=b"{not json")
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert chat_calls(emulator) == []


def test_every_upstream_rate_limited_is_a_rate_limit_error_with_retry_after(gateway, emulator, coding):
    set_key("groq", "g;429=30")
    set_key("cerebras", "c;429=30")
    client = gateway.anthropic()
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="coding", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) > 0
    with pytest.raises(anthropic.RateLimitError):
        with client.messages.stream(model="coding", max_tokens=5, messages=[{"role": "user", "content": "x"}]):
            pass


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limited_upstream_fails_over(gateway, emulator, coding, stream):
    set_key("groq", "g;429")
    client = gateway.anthropic()
    request = {"model": "coding", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.with_streaming_response.create(**request, stream=True) as raw:
            headers = raw.headers
            text = "".join(
                event.delta.text for event in raw.parse() if event.type == "content_block_delta"
            )
    else:
        raw = client.messages.with_raw_response.create(**request)
        headers, text = raw.headers, raw.parse().content[0].text
    assert text == "Echo: hi"
    assert headers["X-FreeLLM-Provider"] == "cerebras" and headers["X-FreeLLM-Attempts"] == "2"
    assert "rate_limited" in headers["X-FreeLLM-Trail"]


def test_a_session_by_metadata_user_id_stays_on_its_model(gateway, emulator, coding):
    from providers.models import ChainEntry

    client = gateway.anthropic()

    def provider(user_id: str, text: str) -> str:
        raw = client.messages.with_raw_response.create(
            model="coding", max_tokens=50, metadata={"user_id": user_id},
            messages=[{"role": "user", "content": text}])
        return raw.headers["X-FreeLLM-Provider"]

    assert provider("user_1_session_a", "first turn") == "groq"
    # The admin puts cerebras first; the running session keeps its model, a new one follows the chain.
    for entry in ChainEntry.objects.filter(chain__name="coding"):
        entry.position = 0 if entry.model.provider.slug == "cerebras" else 1
        entry.save()
    assert provider("user_1_session_a", "a different second turn") == "groq"
    assert provider("user_1_session_b", "first turn") == "cerebras"


def test_models_in_anthropics_shape_when_asked_with_anthropic_version(gateway, emulator, coding):
    client = gateway.anthropic()
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert ids[0] == "coding" and "groq/llama" in ids
    assert all(model.type == "model" and model.display_name for model in models)
    assert client.models.retrieve("groq/llama").max_input_tokens == 131072
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("nope")
    # Without the header, the same path answers OpenAI's list.
    assert gateway.openai().models.list().data[0].id == "coding"


def test_the_request_log_says_the_request_came_in_as_anthropic(gateway, emulator, coding):
    from analytics.models import RequestLog
    from tests.polling import wait_until

    client = gateway.anthropic()
    served = client.messages.with_raw_response.create(model="coding", max_tokens=5,
                                                      messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    ids = [served.headers["X-FreeLLM-Request-Id"], missing.value.response.headers["X-FreeLLM-Request-Id"]]

    def rows():
        found = RequestLog.objects.filter(request_id__in=ids).order_by("id")
        return list(found.values_list("dialect", "requested_model", "status_code"))

    assert wait_until(lambda: len(rows()) == 2)
    assert rows() == [("anthropic", "coding", 200), ("anthropic", "nope", 404)]


def test_a_stream_that_breaks_after_the_first_byte_ends_with_an_error_event(gateway, emulator, coding):
    set_key("groq", "g;midfail=2")
    client = gateway.anthropic()
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="coding", max_tokens=50,
                                    messages=[{"role": "user", "content": "one two three four"}]) as stream:
            seen.extend(stream.text_stream)
    assert seen  # the first words arrived before the break: no failover after the first byte
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "api_error"
    assert "upstream stream failed" in caught.value.body["error"]["message"]


def test_pings_while_the_upstream_is_quiet(gateway, emulator, coding, monkeypatch):
    from routing.api.anthropic import AnthropicEncoder

    # The interval, not the mechanism: the exchange's relay still decides when the upstream went quiet.
    monkeypatch.setattr(AnthropicEncoder, "keepalive_seconds", 0.02)
    set_key("groq", "g;gap=0.1")
    resp = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.api_key},
                      json={"model": "coding", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "one two three"}]})
    names = [frame.split("\n")[0].removeprefix("event: ") for frame in resp.text.strip().split("\n\n")]
    first_delta = names.index("content_block_delta")
    assert "ping" in names[first_delta:], names
    assert names[-1] == "message_stop"


def test_claude_model_names_reach_a_chain_through_an_alias(gateway, emulator, coding):
    from providers.models import ModelAlias

    ModelAlias.objects.create(pattern="claude-*", target="coding", position=1)
    client = gateway.anthropic()
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=20,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().content[0].text == "Echo: hi"
    assert raw.parse().model == "claude-sonnet-4-6"
    assert raw.headers["X-FreeLLM-Chain"] == "coding" and raw.headers["X-FreeLLM-Alias"] == "claude-*"
    assert client.messages.count_tokens(model="claude-haiku-4-5",
                                        messages=[{"role": "user", "content": "hi"}]).input_tokens > 0
    described = client.models.retrieve("claude-opus-4-1")
    assert (described.id, described.type, described.max_input_tokens) == ("claude-opus-4-1", "model", None)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_every_window_is_prompt_is_too_long(gateway, emulator, stream):
    add_provider(emulator, "groq", ["g"], [{"model_id": "small", "context_window": 2000}])
    add_chain("tiny", ["groq/small"])
    client = gateway.anthropic()
    request = {"model": "tiny", "max_tokens": 100, "messages": [{"role": "user", "content": "word " * 4000}]}
    with pytest.raises(anthropic.BadRequestError) as caught:
        if stream:
            with client.messages.stream(**request):
                pass
        else:
            client.messages.create(**request)
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ") and "2,000" in error["message"]
    assert chat_calls(emulator) == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_written_as_text_arrives_as_a_tool_use_block(gateway, emulator, coding, stream):
    set_key("groq", "g;textcall=hermes")
    client = gateway.anthropic()
    request = {"model": "coding", "max_tokens": 200, "tools": [WEATHER],
               "messages": [{"role": "user", "content": "Weather in Paris? call tool"}]}
    if stream:
        with client.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**request)
    assert [block.type for block in message.content] == ["tool_use"]
    assert message.content[0].name == "get_weather" and message.content[0].input == {"city": "echo"}
    assert message.stop_reason == "tool_use"
