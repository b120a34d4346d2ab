"""Tools, JSON output and sampling parameters through the live gateway, for every wire format.

The openai SDK talks to the gateway; the emulator speaks OpenAI, Gemini, Cohere and Workers AI. What each
upstream received is checked in its own dialect, and what comes back must look like OpenAI's answer.
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures_gateway import KINDS, WEATHER_TOOL, add_chain, add_provider, capable_route

SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}


@pytest.fixture(params=KINDS)
def kind(request, gateway, emulator):
    add_chain("auto", [capable_route(emulator, request.param)])
    return request.param


QUESTION = {"role": "user", "content": "call tool for Oslo"}


def test_tool_call_round_trip(gateway, emulator, kind):
    client = gateway.openai()
    first = client.chat.completions.create(model="auto", messages=[QUESTION], tools=[WEATHER_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "echo"}

    answer = client.chat.completions.create(model="auto", tools=[WEATHER_TOOL], messages=[
        QUESTION, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert "sunny" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"


def test_streamed_tool_call_deltas_rebuild_the_call(gateway, emulator, kind):
    client = gateway.openai()
    chunks = list(client.chat.completions.create(model="auto", messages=[QUESTION], tools=[WEATHER_TOOL], stream=True))

    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or delta.id
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "echo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]

    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]}
    follow_up = client.chat.completions.create(model="auto", tools=[WEATHER_TOOL], stream=True, messages=[
        QUESTION, assistant, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}])
    assert "sunny" in "".join(c.choices[0].delta.content or "" for c in follow_up if c.choices)


def _schema_sent(kind: str, body: dict) -> dict | None:
    """The JSON schema as the upstream received it, in its own dialect."""
    if kind == "openai":
        return body["response_format"]["json_schema"]["schema"]
    if kind == "gemini":
        return body["generationConfig"].get("responseJsonSchema")
    return body["response_format"].get("json_schema")


@pytest.mark.parametrize("response_format", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "echo", "schema": SCHEMA, "strict": True}},
])
def test_json_output_reaches_every_dialect(gateway, emulator, kind, response_format):
    completion = gateway.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "as json please"}], response_format=response_format
    )

    assert json.loads(completion.choices[0].message.content) == {"echo": "as json please"}
    body = emulator.calls[-1].body
    if response_format["type"] == "json_schema":
        assert _schema_sent(kind, body) == SCHEMA


def test_sampling_parameters_reach_an_openai_upstream_unchanged(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_chain("auto", ["groq/llama"])
    gateway.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stop=["END"], seed=7, logprobs=True,
        top_logprobs=2, max_completion_tokens=50, temperature=0.3, top_p=0.9, user="u-1",
    )
    sent = emulator.calls[0].body
    assert {k: sent[k] for k in ("stop", "seed", "logprobs", "top_logprobs", "max_completion_tokens", "temperature",
                                 "top_p", "user")} == {"stop": ["END"], "seed": 7, "logprobs": True, "top_logprobs": 2,
                                                       "max_completion_tokens": 50, "temperature": 0.3, "top_p": 0.9,
                                                       "user": "u-1"}


def test_a_provider_without_max_completion_tokens_gets_max_tokens(gateway, emulator):
    # Mistral (and older OpenAI-compatible servers) refuse max_completion_tokens with a 422; the cap the client
    # set must still reach them, under the older name.
    add_provider(emulator, "mistral", ["ok"], ["small"], drop_params=["max_completion_tokens"])
    add_chain("auto", ["mistral/small"])
    gateway.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=50
    )
    sent = emulator.calls[0].body
    assert "max_completion_tokens" not in sent and sent["max_tokens"] == 50


def test_a_reasoning_model_streams_its_thinking_without_tripping_the_first_token_timeout(gateway, emulator, settings):
    # gpt-oss on Groq/OpenRouter streams `delta.reasoning` for a while before any content. That is the answer
    # arriving: it must reach the client as it comes, not count as silence until the first content token.
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 1.0
    add_provider(emulator, "groq", ["a;think=8;gap=0.25"], ["gpt-oss"])
    add_provider(emulator, "backup", ["ok"], ["other"])
    add_chain("auto", ["groq/gpt-oss", "backup/other"])

    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", stream=True, messages=[{"role": "user", "content": "think first"}]
    )
    chunks = list(raw.parse())

    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    thoughts = [c.choices[0].delta.model_extra.get("reasoning") for c in chunks if c.choices]
    assert "".join(t for t in thoughts if t) == "".join(f"thought {n}. " for n in range(8))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: think first"
    assert emulator.calls_for(provider="backup") == []
