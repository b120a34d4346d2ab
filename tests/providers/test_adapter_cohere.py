"""The native Cohere v2 adapter against the emulator's Cohere wire format, over real HTTP."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from providers.adapters.base import ErrorKind, Target, UpstreamError
from providers.adapters.cohere import CohereAdapter
from tests.adapter_helpers import TIMEOUTS, WEATHER_TOOL, chat, collect, finishes
from tests.emulator import content

ADAPTER = CohereAdapter()


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def target(emulator, key: str | None = "co-key", model: str = "command-a-03-2025") -> Target:
    return Target(provider="cohere", base_url=emulator.base_url("cohere", "v2"), model=model, api_key=key)





async def test_chat_translates_parameters_and_answers(emulator, client):
    request = {
        "model": "auto",
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        "top_p": 0.5,
        "stop": ["END"],
        "max_completion_tokens": 50,
        "temperature": 0.1,
        "stream_options": {"include_usage": True},
        "n": 1,
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert result.body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello"}
    assert result.body["model"] == "command-a-03-2025"  # the model that served, not the name asked for
    assert result.body["choices"][0]["finish_reason"] == "stop"
    [call] = emulator.calls_for(provider="cohere")
    assert call.path == "/cohere/v2/chat"
    assert call.headers["authorization"] == "Bearer co-key"
    assert call.body == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        "p": 0.5,
        "stop_sequences": ["END"],
        "max_tokens": 50,
        "temperature": 0.1,
    }


async def test_usage_is_the_billed_units(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("count me"), TIMEOUTS)

    prompt = content.estimate_tokens("count me")
    completion = content.estimate_tokens("Echo: count me")
    assert result.body["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt, completion)


async def test_max_tokens_finish_is_length(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("a rather long question here", max_tokens=2), TIMEOUTS)

    assert result.body["choices"][0]["finish_reason"] == "length"


async def test_json_mode(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("data", response_format={"type": "json_object"}), TIMEOUTS)

    assert json.loads(result.body["choices"][0]["message"]["content"]) == {"echo": "data"}
    assert emulator.calls[-1].body["response_format"] == {"type": "json_object"}


async def test_stream_text_finish_and_usage(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("stream this please"), TIMEOUTS)
    chunks = await collect(stream)

    texts = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(texts) >= 3
    assert "".join(texts) == "Echo: stream this please"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert finishes(chunks) == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == content.estimate_tokens("stream this please")
    assert emulator.calls[-1].body["stream"] is True


async def test_tool_calls_come_back_in_openai_shape(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("call tool please", tools=[WEATHER_TOOL]), TIMEOUTS)

    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "echo"}
    assert emulator.calls[-1].body["tools"] == [WEATHER_TOOL]


async def test_named_tool_choice_offers_only_that_tool_and_requires_it(emulator, client):
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}
    named = {"type": "function", "function": {"name": "get_weather"}}
    result = await ADAPTER.chat(client, target(emulator), chat("hi", tools=[other, WEATHER_TOOL], tool_choice=named), TIMEOUTS)

    assert result.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    body = emulator.calls[-1].body
    assert body["tool_choice"] == "REQUIRED"
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]


async def test_tool_results_round_trip(emulator, client):
    first = await ADAPTER.chat(client, target(emulator), chat("call tool", tools=[WEATHER_TOOL]), TIMEOUTS)
    assistant = first.body["choices"][0]["message"]
    request = {
        "model": "auto",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "call tool"},
            assistant,
            {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "sunny"},
        ],
    }
    second = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert second.body["choices"][0]["message"]["content"] == "Tool said: sunny"
    sent = emulator.calls[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "tool_calls": assistant["tool_calls"]}
    assert sent[2] == {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "sunny"}


async def test_assistant_text_beside_tool_calls_is_the_tool_plan(emulator, client):
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    request = {
        "model": "auto",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        ],
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert result.body["choices"][0]["message"]["content"] == "Tool said: rain"
    assert emulator.calls[-1].body["messages"][1] == {"role": "assistant", "tool_plan": "Let me look.", "tool_calls": [call]}


async def test_stream_tool_calls(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("call tool", tools=[WEATHER_TOOL]), TIMEOUTS)
    chunks = await collect(stream)

    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["function"]["name"] == "get_weather"
    assert deltas[0]["id"] == "get_weather_emu0"
    assert {d["index"] for d in deltas} == {0}
    assert len(deltas) >= 4  # the start plus at least three argument pieces
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"city": "echo"}
    assert finishes(chunks) == ["tool_calls"]
    assert "usage" in chunks[-1]


async def test_rate_limit_with_retry_after(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key="k;429=4"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 4.0
    assert "Trial key" in caught.value.message


async def test_rate_limit_when_opening_a_stream(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat_stream(client, target(emulator, key="k;fail=1:429"), chat("hi"), TIMEOUTS)
    assert caught.value.kind is ErrorKind.RATE_LIMITED

    stream = await ADAPTER.chat_stream(client, target(emulator, key="k;fail=1:429"), chat("hi"), TIMEOUTS)
    assert finishes(await collect(stream)) == ["stop"]


@pytest.mark.parametrize("key", ["k;401", "k;403", None])
async def test_auth_errors(emulator, client, key):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key=key), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.AUTH


@pytest.mark.parametrize(
    ("key", "model", "kind"),
    [
        ("k", "missing-model", ErrorKind.NOT_FOUND),
        ("k;ctx=1", "command-a-03-2025", ErrorKind.CONTEXT_LENGTH),
        ("k;500", "command-a-03-2025", ErrorKind.SERVER),
        ("k;503", "command-a-03-2025", ErrorKind.SERVER),
    ],
)
async def test_error_kinds(emulator, client, key, model, kind):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key=key, model=model), chat("a long enough prompt"), TIMEOUTS)

    assert caught.value.kind is kind


async def test_stream_cut_before_message_end_is_a_connection_error(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, key="k;drop=2"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.CONNECTION


async def test_error_finish_mid_stream_is_a_server_error(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, key="k;midfail=3"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.SERVER


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings(emulator, client):
    request = {"model": "emb", "input": ["alpha", "beta"], "dimensions": 16}
    result = await ADAPTER.embeddings(client, target(emulator, model="embed-v4.0"), request, TIMEOUTS)

    assert [item["embedding"] for item in result.body["data"]] == [
        content.embedding_vector("alpha", 16),
        content.embedding_vector("beta", 16),
    ]
    assert result.body["usage"]["prompt_tokens"] == content.estimate_tokens("alpha") + content.estimate_tokens("beta")
    assert emulator.calls[-1].body == {
        "model": "embed-v4.0",
        "texts": ["alpha", "beta"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 16,
    }


async def test_embeddings_base64_and_client_input_type(emulator, client):
    request = {"input": "query text", "encoding_format": "base64", "input_type": "search_query"}
    result = await ADAPTER.embeddings(client, target(emulator, model="embed-v4.0"), request, TIMEOUTS)

    assert _floats(result.body["data"][0]["embedding"]) == pytest.approx(content.embedding_vector("query text"), abs=1e-6)
    assert emulator.calls[-1].body["input_type"] == "search_query"


async def test_embedding_errors(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.embeddings(client, target(emulator, key="k;429"), {"input": "x"}, TIMEOUTS)
    assert caught.value.kind is ErrorKind.RATE_LIMITED

    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.embeddings(client, target(emulator, key="k;401"), {"input": "x"}, TIMEOUTS)
    assert caught.value.kind is ErrorKind.AUTH
