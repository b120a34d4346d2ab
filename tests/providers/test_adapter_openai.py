"""The OpenAI-compatible adapter against the upstream emulator over real HTTP."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from providers.adapters import get_adapter
from providers.adapters.base import ErrorKind, Target, Timeouts, UpstreamError
from providers.adapters.openai import OpenAIAdapter, _error_from_response

FAST = Timeouts(connect=2.0, first_token=5.0, idle=5.0)
USER = {"role": "user", "content": "hello there, emulator"}


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def target(emulator, key: str = "sk-good-key", *, provider: str = "groq", model: str = "llama-test", **extra) -> Target:
    return Target(provider=provider, base_url=emulator.base_url(provider), model=model, api_key=key,
                  key_label="a", **extra)


adapter = OpenAIAdapter()


def test_registry_returns_the_openai_adapter():
    assert isinstance(get_adapter("openai"), OpenAIAdapter)
    assert get_adapter("openai") is get_adapter("openai")
    with pytest.raises(KeyError):
        get_adapter("no-such-format")


async def test_chat_answers_and_reports_usage(emulator, client):
    answer = await adapter.chat(client, target(emulator), {"model": "auto", "messages": [USER]}, FAST)

    assert answer.body["choices"][0]["message"]["content"] == "Echo: hello there, emulator"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    (call,) = emulator.calls_for(name="sk-good-key")
    # The upstream gets its own model id, not the name the client asked for.
    assert call.model == "llama-test"
    assert call.headers["authorization"] == "Bearer sk-good-key"
    assert "stream" not in call.body


async def test_chat_stream_yields_chunks_then_usage(emulator, client):
    stream = await adapter.chat_stream(client, target(emulator), {"model": "auto", "messages": [USER]}, FAST)
    chunks = [chunk async for chunk in stream.chunks()]
    await stream.aclose()

    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) >= 3
    assert "".join(p for p in pieces if p) == "Echo: hello there, emulator"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    (call,) = emulator.calls
    assert call.body["stream"] is True and call.body["stream_options"] == {"include_usage": True}
    assert call.completed and not call.disconnected


async def test_chat_returns_a_tool_call(emulator, client):
    tools = [{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}]
    request = {"model": "auto", "messages": [{"role": "user", "content": "please call tool"}], "tools": tools}

    answer = await adapter.chat(client, target(emulator), request, FAST)

    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "echo"}


async def test_streamed_tool_call_arguments_arrive_in_pieces(emulator, client):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}}}]
    request = {"model": "auto", "messages": [USER], "tools": tools, "tool_choice": "required"}

    stream = await adapter.chat_stream(client, target(emulator), request, FAST)
    chunks = [chunk async for chunk in stream.chunks()]

    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    arguments = "".join(
        d["tool_calls"][0]["function"].get("arguments", "") for d in deltas if d.get("tool_calls")
    )
    assert json.loads(arguments) == {"query": "echo", "limit": 1}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_embeddings_floats_and_base64(emulator, client):
    request = {"model": "embed", "input": ["one", "two"], "dimensions": 4}
    floats = await adapter.embeddings(client, target(emulator), request, FAST)
    packed = await adapter.embeddings(client, target(emulator), {**request, "encoding_format": "base64"}, FAST)

    vectors = [item["embedding"] for item in floats.body["data"]]
    assert [len(v) for v in vectors] == [4, 4] and vectors[0] != vectors[1]
    decoded = struct.unpack("<4f", base64.b64decode(packed.body["data"][0]["embedding"]))
    assert decoded == pytest.approx(vectors[0], abs=1e-6)
    assert floats.usage.prompt_tokens > 0


async def test_images_return_a_png(emulator, client):
    answer = await adapter.images(client, target(emulator), {"model": "img", "prompt": "a cat", "n": 2}, FAST)

    assert len(answer.body["data"]) == 2
    assert base64.b64decode(answer.body["data"][0]["b64_json"]).startswith(b"\x89PNG")


async def test_transcription_sends_multipart_and_reads_json_or_text(emulator, client):
    audio = ("clip.mp3", b"\x00" * 50, "audio/mpeg")
    as_json = await adapter.transcription(client, target(emulator), audio, {"model": "whisper"}, FAST)
    as_text = await adapter.transcription(
        client, target(emulator), audio, {"model": "whisper", "response_format": "text", "temperature": 0}, FAST
    )

    assert as_json.body == {"text": "Transcript of clip.mp3 (50 bytes)."}
    assert as_text.body.strip() == "Transcript of clip.mp3 (50 bytes)."
    form = emulator.calls[1].form
    assert form["model"] == "llama-test" and form["temperature"] == "0"
    assert form["file"] == {"filename": "clip.mp3", "size": 50, "content_type": "audio/mpeg"}


async def test_speech_returns_audio_bytes(emulator, client):
    answer = await adapter.speech(client, target(emulator), {"model": "tts", "input": "hi", "voice": "alloy"}, FAST)

    assert answer.content_type == "audio/mpeg"
    assert answer.content.endswith(b"hi")


async def test_rate_limited_carries_retry_after(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await adapter.chat(client, target(emulator, "sk-busy-key;429=12"), {"messages": [USER]}, FAST)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.status == 429
    assert caught.value.retry_after == 12
    assert "sk-busy-key" not in str(caught.value)


async def test_rpm_limit_headers_reach_the_caller(emulator, client):
    key = "sk-limited-key;rpm=1"
    answer = await adapter.chat(client, target(emulator, key), {"messages": [USER]}, FAST)
    with pytest.raises(UpstreamError) as caught:
        await adapter.chat(client, target(emulator, key), {"messages": [USER]}, FAST)

    assert answer.headers["x-ratelimit-limit-requests"] == "1"
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert 0 < caught.value.retry_after <= 60
    assert caught.value.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    ("directive", "kind"),
    [("500", ErrorKind.SERVER), ("503", ErrorKind.SERVER), ("401", ErrorKind.AUTH), ("403", ErrorKind.AUTH)],
)
async def test_status_errors_map_to_kinds(emulator, client, directive, kind):
    with pytest.raises(UpstreamError) as caught:
        await adapter.chat(client, target(emulator, f"sk-bad-key;{directive}"), {"messages": [USER]}, FAST)

    assert caught.value.kind is kind
    assert caught.value.status == int(directive)
    assert "sk-bad-key" not in caught.value.message


async def test_missing_model_and_context_length(emulator, client):
    with pytest.raises(UpstreamError) as missing:
        await adapter.chat(client, target(emulator, model="missing-model"), {"messages": [USER]}, FAST)
    with pytest.raises(UpstreamError) as too_long:
        await adapter.chat(client, target(emulator, "sk-small-key;ctx=2"), {"messages": [USER]}, FAST)

    assert missing.value.kind is ErrorKind.NOT_FOUND
    assert too_long.value.kind is ErrorKind.CONTEXT_LENGTH
    assert too_long.value.kind.fails_over


async def test_hang_times_out(emulator, client):
    timeouts = Timeouts(connect=1.0, first_token=0.3, idle=0.3)
    with pytest.raises(UpstreamError) as plain:
        await adapter.chat(client, target(emulator, "sk-hang-key;hang"), {"messages": [USER]}, timeouts)
    with pytest.raises(UpstreamError) as streamed:
        await adapter.chat_stream(client, target(emulator, "sk-hang-key;hang"), {"messages": [USER]}, timeouts)

    assert plain.value.kind is ErrorKind.TIMEOUT
    assert streamed.value.kind is ErrorKind.TIMEOUT


async def test_idle_gap_between_chunks_times_out(emulator, client):
    timeouts = Timeouts(connect=1.0, first_token=2.0, idle=0.2)
    stream = await adapter.chat_stream(client, target(emulator, "sk-gap-key;gap=1"), {"messages": [USER]}, timeouts)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in stream.chunks():
            received.append(chunk)

    assert caught.value.kind is ErrorKind.TIMEOUT
    assert len(received) == 1


async def test_dropped_stream_raises(emulator, client):
    stream = await adapter.chat_stream(client, target(emulator, "sk-drop-key;drop=2"), {"messages": [USER]}, FAST)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in stream.chunks():
            received.append(chunk)

    assert caught.value.kind is ErrorKind.CONNECTION
    assert len(received) == 2
    assert emulator.calls[0].dropped


async def test_connection_refused_is_a_connection_error(client):
    dead = Target(provider="dead", base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-x")
    with pytest.raises(UpstreamError) as caught:
        await adapter.chat(client, dead, {"messages": [USER]}, FAST)

    assert caught.value.kind is ErrorKind.CONNECTION


async def test_quirks_drop_params_and_add_headers(emulator, client):
    quirky = target(
        emulator,
        provider="openrouter",
        headers={"HTTP-Referer": "https://freellm.example", "X-Title": "freellm"},
        drop_params=frozenset({"seed", "stream_options"}),
    )
    request = {"messages": [USER], "seed": 7, "temperature": 0.2}

    await adapter.chat(client, quirky, request, FAST)
    stream = await adapter.chat_stream(client, quirky, request, FAST)
    [chunk async for chunk in stream.chunks()]

    plain, streamed = emulator.calls_for(provider="openrouter")
    for call in (plain, streamed):
        assert "seed" not in call.body and call.body["temperature"] == 0.2
        assert call.headers["http-referer"] == "https://freellm.example"
        assert call.headers["x-title"] == "freellm"
    assert "stream_options" not in streamed.body


async def test_mid_stream_error_event_raises(emulator, client):
    stream = await adapter.chat_stream(client, target(emulator, "sk-late-key;midfail=2"), {"messages": [USER]}, FAST)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in stream.chunks():
            received.append(chunk)

    assert len(received) == 2
    assert caught.value.kind is ErrorKind.SERVER
    assert caught.value.status == 502
    assert "failed mid-stream" in caught.value.message


GROQ_TPM = (
    "Rate limit reached for model `llama` in organization `org_1` on tokens per minute (TPM): Limit 6000, "
    "Used 5800, Requested 400. Please try again in 1m2.5s."
)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after"),
    [
        (429, {"error": {"message": GROQ_TPM, "type": "tokens", "code": "rate_limit_exceeded"}}, {},
         ErrorKind.RATE_LIMITED, 62.5),
        (429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500"}, ErrorKind.RATE_LIMITED, 1.5),
        (413, {"error": {"message": "Request too large for model `llama` on tokens per minute (TPM)",
                         "code": "rate_limit_exceeded"}}, {}, ErrorKind.CONTEXT_LENGTH, None),
        (400, {"object": "error", "message": "Prompt contains 40000 tokens, too many tokens for model",
               "type": "invalid_request_message_error", "code": "3051"}, {}, ErrorKind.CONTEXT_LENGTH, None),
        (400, {"object": "error", "message": "Invalid model: nope", "type": "invalid_model", "code": "1500"}, {},
         ErrorKind.NOT_FOUND, None),
        (400, [{"error": {"code": 400, "message": "The input token count exceeds the maximum number of tokens "
                          "allowed", "status": "INVALID_ARGUMENT"}}], {}, ErrorKind.CONTEXT_LENGTH, None),
        (400, {"error": {"message": "temperature must be <= 2", "code": "invalid_value"}}, {},
         ErrorKind.BAD_REQUEST, None),
        (400, {"error": {"message": "blocked", "code": "content_policy_violation"}}, {}, ErrorKind.BLOCKED, None),
        (402, {"error": {"message": "Insufficient credits", "code": 402}}, {}, ErrorKind.AUTH, None),
        (503, {"detail": "Service Unavailable"}, {}, ErrorKind.SERVER, None),
    ],
)
def test_error_dialects(status, body, headers, kind, retry_after):
    response = httpx.Response(status, json=body, headers=headers)
    t = Target(provider="p", base_url="http://x", model="m", api_key="sk-secret-value")

    error = _error_from_response(response, t)

    assert error.kind is kind
    assert error.status == status
    assert error.retry_after == (pytest.approx(retry_after) if retry_after is not None else None)


def test_error_message_never_carries_the_key():
    response = httpx.Response(401, json={"error": {"message": "Incorrect API key provided: sk-secret-value."}})
    t = Target(provider="p", base_url="http://x", model="m", api_key="sk-secret-value")

    error = _error_from_response(response, t)

    assert error.kind is ErrorKind.AUTH
    assert "sk-secret-value" not in error.message and "sk-secret-value" not in str(error)
