"""The native Gemini adapter against the emulator's Gemini wire format, over real HTTP."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from providers.adapters.base import ErrorKind, Target, Timeouts, UpstreamError
from providers.adapters.gemini import GeminiAdapter
from tests.adapter_helpers import TIMEOUTS, chat, collect
from tests.emulator import content

ADAPTER = GeminiAdapter()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def target(emulator, key: str | None = "gem-key", model: str = "gemini-2.5-flash") -> Target:
    return Target(provider="gemini", base_url=emulator.base_url("gemini", "v1beta"), model=model, api_key=key)




async def test_chat_translates_roles_system_and_generation_config(emulator, client):
    request = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Echo: hi"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " there"}]},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 100,
        "stop": "END",
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    choice = result.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there"}
    assert choice["finish_reason"] == "stop"
    assert result.body["model"] == "gemini-2.5-flash"  # the model that served, not the name asked for
    assert result.body["object"] == "chat.completion"
    [call] = emulator.calls_for(provider="gemini")
    assert call.path.endswith("/v1beta/models/gemini-2.5-flash:generateContent")
    assert call.headers["x-goog-api-key"] == "gem-key"
    assert call.body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in call.body["contents"]] == ["user", "model", "user"]
    assert call.body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
    }


async def test_chat_usage_comes_from_usage_metadata(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("count me"), TIMEOUTS)

    prompt = content.estimate_tokens("count me")
    completion = content.estimate_tokens("Echo: count me")
    assert result.body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt, completion)


async def test_json_mode_asks_for_application_json(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("data", response_format={"type": "json_object"}), TIMEOUTS)

    assert json.loads(result.body["choices"][0]["message"]["content"]) == {"echo": "data"}
    assert emulator.calls[-1].body["generationConfig"]["responseMimeType"] == "application/json"


async def test_images_as_data_urls_become_inline_data(emulator, client):
    data_url = f"data:image/png;base64,{content.TINY_PNG_B64}"
    request = {
        "model": "auto",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]}],
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert result.body["choices"][0]["message"]["content"] == "Echo: what is this"
    parts = emulator.calls[-1].body["contents"][0]["parts"]
    assert parts == [{"text": "what is this"}, {"inlineData": {"mimeType": "image/png", "data": content.TINY_PNG_B64}}]


async def test_stream_yields_text_chunks_finish_and_usage(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("stream this please"), TIMEOUTS)
    chunks = await collect(stream)

    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(texts) >= 3
    assert "".join(texts) == "Echo: stream this please"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == content.estimate_tokens("Echo: stream this please")
    assert len({c["id"] for c in chunks}) == 1
    assert emulator.calls[-1].path.endswith(":streamGenerateContent")


async def test_tools_become_function_declarations_and_calls_come_back(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("please call tool", tools=[WEATHER_TOOL]), TIMEOUTS)

    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "echo", "days": 1}
    assert call["id"].startswith("call_")
    assert call["extra_content"]["google"]["thought_signature"]
    declared = emulator.calls[-1].body["tools"]
    assert declared == [{"functionDeclarations": [{
        "name": "get_weather",
        "description": "Weather for a city",
        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
    }]}]


async def test_tool_choice_maps_to_function_calling_config(emulator, client):
    named = {"type": "function", "function": {"name": "get_weather"}}
    result = await ADAPTER.chat(client, target(emulator), chat("hi", tools=[WEATHER_TOOL], tool_choice=named), TIMEOUTS)

    assert result.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert emulator.calls[-1].body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
async def test_tool_results_round_trip_as_function_responses(emulator, client, model):
    first = await ADAPTER.chat(client, target(emulator, model=model), chat("call tool now", tools=[WEATHER_TOOL]), TIMEOUTS)
    assistant = first.body["choices"][0]["message"]
    call_id = assistant["tool_calls"][0]["id"]
    request = {
        "model": "auto",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "call tool now"},
            assistant,
            {"role": "tool", "tool_call_id": call_id, "content": '{"temp": 21}'},
        ],
    }
    second = await ADAPTER.chat(client, target(emulator, model=model), request, TIMEOUTS)

    assert second.body["choices"][0]["message"]["content"] == 'Tool said: {"temp": 21}'
    contents = emulator.calls[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "echo", "days": 1}}
    assert contents[1]["parts"][0]["thoughtSignature"] == assistant["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]


async def test_history_without_signatures_still_works_on_gemini_3(emulator, client):
    # A conversation that began on another provider has no Gemini signatures.
    request = {
        "model": "auto",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
        ],
    }
    result = await ADAPTER.chat(client, target(emulator, model="gemini-3-flash-preview"), request, TIMEOUTS)

    assert result.body["choices"][0]["message"]["content"] == 'Tool said: {"result": "sunny"}'


async def test_stream_with_tools_yields_tool_call_chunks(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("call tool", tools=[WEATHER_TOOL]), TIMEOUTS)
    chunks = await collect(stream)

    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(tc["index"], tc["function"]["name"]) for tc in calls] == [(0, "get_weather")]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "echo", "days": 1}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["usage"]["prompt_tokens"] == content.estimate_tokens("call tool")


async def test_rate_limit_reads_retry_info(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key="k;429=3"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.status == 429
    assert caught.value.retry_after == 3.0
    assert "retry-after" not in {k.lower() for k in caught.value.headers}  # it came from RetryInfo


async def test_per_day_quota_waits_until_pacific_midnight(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key="k;429=3;perday"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert 3.0 < caught.value.retry_after <= 24 * 3600 + 3600


async def test_rate_limit_in_stream_open(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat_stream(client, target(emulator, key="k;429"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("key", ["k;401", "k;403", None])
async def test_bad_keys_are_auth_errors(emulator, client, key):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key=key), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.AUTH
    assert "gem-key" not in caught.value.message


async def test_invalid_key_is_auth_even_though_gemini_says_400(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key="k;401"), chat("hi"), TIMEOUTS)

    assert caught.value.status == 400
    assert "API key not valid" in caught.value.message


@pytest.mark.parametrize(
    ("key", "model", "kind"),
    [
        ("k", "missing-model", ErrorKind.NOT_FOUND),
        ("k;ctx=1", "gemini-2.5-flash", ErrorKind.CONTEXT_LENGTH),
        ("k;500", "gemini-2.5-flash", ErrorKind.SERVER),
        ("k;502", "gemini-2.5-flash", ErrorKind.SERVER),
        ("k;503", "gemini-2.5-flash", ErrorKind.SERVER),
    ],
)
async def test_error_kinds(emulator, client, key, model, kind):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key=key, model=model), chat("a long enough prompt"), TIMEOUTS)

    assert caught.value.kind is kind


async def test_bad_request_is_not_failed_over(emulator, client):
    # A tool message that answers no earlier tool call cannot be expressed for Gemini.
    request = {"model": "auto", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert not caught.value.kind.fails_over
    assert emulator.calls == []


@pytest.mark.parametrize("text", ["this is a blocked prompt", "give me a blocked answer"])
async def test_safety_blocks_are_clear_errors(emulator, client, text):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator), chat(text), TIMEOUTS)

    assert caught.value.kind is ErrorKind.BLOCKED
    assert "safety filter" in caught.value.message
    assert "SAFETY" in caught.value.message


async def test_safety_block_in_stream(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("a blocked prompt"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.BLOCKED


async def test_dropped_stream_is_a_connection_error(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, key="k;drop=1"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.CONNECTION


async def test_error_event_mid_stream_is_a_server_error(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, key="k;midfail=1"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.SERVER
    assert "overloaded" in caught.value.message


async def test_hanging_upstream_times_out(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key="k;hang"), chat("hi"), Timeouts(connect=1, first_token=0.3, idle=0.3))

    assert caught.value.kind is ErrorKind.TIMEOUT


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_single_embedding_uses_embed_content(emulator, client):
    request = {"model": "emb", "input": "hello", "dimensions": 12}
    result = await ADAPTER.embeddings(client, target(emulator, model="gemini-embedding-001"), request, TIMEOUTS)

    [item] = result.body["data"]
    assert result.body["object"] == "list"
    assert item == {"object": "embedding", "index": 0, "embedding": content.embedding_vector("hello", 12)}
    call = emulator.calls[-1]
    assert call.path.endswith("/models/gemini-embedding-001:embedContent")
    assert call.body == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 12,
    }
    assert result.body["usage"]["prompt_tokens"] > 0


async def test_batch_embeddings_keep_order_and_support_base64(emulator, client):
    request = {"model": "emb", "input": ["one", "two", "three"], "encoding_format": "base64"}
    result = await ADAPTER.embeddings(client, target(emulator, model="gemini-embedding-001"), request, TIMEOUTS)

    assert [item["index"] for item in result.body["data"]] == [0, 1, 2]
    for item, text in zip(result.body["data"], ["one", "two", "three"], strict=True):
        assert _floats(item["embedding"]) == pytest.approx(content.embedding_vector(text), abs=1e-6)
    call = emulator.calls[-1]
    assert call.path.endswith(":batchEmbedContents")
    assert len(call.body["requests"]) == 3


async def test_embedding_rate_limit(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.embeddings(client, target(emulator, key="k;429=2"), {"input": ["a", "b"]}, TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 2.0
