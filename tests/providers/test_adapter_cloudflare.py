"""The native Cloudflare Workers AI adapter against the emulator's Workers AI wire format, over real HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from providers.adapters.base import ErrorKind, Target, UpstreamError
from providers.adapters.cloudflare import CloudflareAdapter, vtt_to_srt
from tests.adapter_helpers import TIMEOUTS, WEATHER_TOOL, chat, collect, finishes
from tests.emulator import content

ADAPTER = CloudflareAdapter()
ACCOUNT = "0123456789abcdef0123456789abcdef"
CHAT_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def target(emulator, token: str = "cf-token", model: str = CHAT_MODEL, account: str = ACCOUNT) -> Target:
    return Target(
        provider="cloudflare",
        base_url=emulator.base_url("cloudflare", "client/v4"),
        model=model,
        api_key=f"{account}:{token}" if account else token,
    )





async def test_chat_splits_the_key_and_builds_the_run_url(emulator, client):
    request = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        "temperature": 0.3,
        "stop": ["x"],
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert result.body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello"}
    assert result.body["model"] == CHAT_MODEL  # the model that served, not the name asked for
    assert result.body["choices"][0]["finish_reason"] == "stop"
    [call] = emulator.calls_for(provider="cloudflare")
    assert call.path == f"/cloudflare/client/v4/accounts/{ACCOUNT}/ai/run/{CHAT_MODEL}"
    assert call.headers["authorization"] == "Bearer cf-token"
    assert call.body == {
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        "temperature": 0.3,
        "max_tokens": 1024,
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_gpt_oss_chats_through_the_openai_compatible_endpoint(emulator, client, stream):
    cf = target(emulator, model="@cf/openai/gpt-oss-120b")
    if stream:
        chunks = await collect(await ADAPTER.chat_stream(client, cf, chat("hello oss"), TIMEOUTS))
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    else:
        text = (await ADAPTER.chat(client, cf, chat("hello oss"), TIMEOUTS)).body["choices"][0]["message"]["content"]

    assert text == "Echo: hello oss"
    [call] = emulator.calls_for(provider="cloudflare")
    assert call.path == f"/cloudflare/client/v4/accounts/{ACCOUNT}/ai/v1/chat/completions"
    assert call.headers["authorization"] == "Bearer cf-token"
    assert call.body["model"] == "@cf/openai/gpt-oss-120b"


async def test_chat_usage(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("count me", max_tokens=50), TIMEOUTS)

    prompt = content.estimate_tokens("count me")
    completion = content.estimate_tokens("Echo: count me")
    assert result.body["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt, completion)
    assert emulator.calls[-1].body["max_tokens"] == 50


async def test_stream_text_usage_and_done(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("stream this please"), TIMEOUTS)
    chunks = await collect(stream)

    texts = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(texts) >= 3
    assert "".join(texts) == "Echo: stream this please"
    assert finishes(chunks) == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == content.estimate_tokens("Echo: stream this please")
    assert emulator.calls[-1].body["stream"] is True


@pytest.mark.parametrize("model", [CHAT_MODEL, "@hf/nousresearch/hermes-2-pro-mistral-7b"])
async def test_tool_calls_in_either_shape(emulator, client, model):
    result = await ADAPTER.chat(client, target(emulator, model=model), chat("call tool", tools=[WEATHER_TOOL]), TIMEOUTS)

    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "echo"}
    assert call["id"]


@pytest.mark.parametrize("model", [CHAT_MODEL, "@hf/nousresearch/hermes-2-pro-mistral-7b"])
async def test_streamed_tool_calls(emulator, client, model):
    stream = await ADAPTER.chat_stream(client, target(emulator, model=model), chat("call tool", tools=[WEATHER_TOOL]), TIMEOUTS)
    chunks = await collect(stream)

    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["function"]["name"] == "get_weather"
    assert {d["index"] for d in deltas} == {0}
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"city": "echo"}
    assert finishes(chunks) == ["tool_calls"]


async def test_tool_results_round_trip_with_names(emulator, client):
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
    assert sent[1]["content"] == ""
    assert sent[1]["tool_calls"] == assistant["tool_calls"]
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": assistant["tool_calls"][0]["id"], "name": "get_weather"}


async def test_tool_choice_none_sends_no_tools(emulator, client):
    result = await ADAPTER.chat(client, target(emulator), chat("call tool", tools=[WEATHER_TOOL], tool_choice="none"), TIMEOUTS)

    assert result.body["choices"][0]["message"]["content"] == "Echo: call tool"
    assert "tools" not in emulator.calls[-1].body


async def test_daily_allocation_waits_until_utc_midnight(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, token="t;429"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert "daily free allocation" in caught.value.message
    assert 0 < caught.value.retry_after <= 24 * 3600


async def test_capacity_rate_limit_uses_retry_after(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat_stream(client, target(emulator, token="t;fail=1:429"), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert caught.value.retry_after == 1.0


@pytest.mark.parametrize("token", ["t;401", "t;403"])
async def test_auth_errors(emulator, client, token):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, token=token), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.AUTH


async def test_key_without_account_id_is_an_auth_error_without_a_call(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, token="only-a-token", account=""), chat("hi"), TIMEOUTS)

    assert caught.value.kind is ErrorKind.AUTH
    assert "only-a-token" not in caught.value.message
    assert emulator.calls == []


@pytest.mark.parametrize(
    ("token", "model", "kind"),
    [
        ("t", "missing-model", ErrorKind.NOT_FOUND),
        ("t;ctx=1", CHAT_MODEL, ErrorKind.CONTEXT_LENGTH),
        ("t;500", CHAT_MODEL, ErrorKind.SERVER),
        ("t;502", CHAT_MODEL, ErrorKind.SERVER),
    ],
)
async def test_error_kinds(emulator, client, token, model, kind):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, token=token, model=model), chat("a long enough prompt"), TIMEOUTS)

    assert caught.value.kind is kind


async def test_dropped_stream_is_a_connection_error(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, token="t;drop=2"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.CONNECTION


async def test_error_event_mid_stream(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator, token="t;midfail=2"), chat("one two three four"), TIMEOUTS)
    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert caught.value.kind is ErrorKind.SERVER


async def test_embeddings(emulator, client):
    model = "@cf/baai/bge-base-en-v1.5"
    result = await ADAPTER.embeddings(client, target(emulator, model=model), {"input": ["one", "two"]}, TIMEOUTS)

    assert [item["embedding"] for item in result.body["data"]] == [content.embedding_vector("one"), content.embedding_vector("two")]
    assert result.body["usage"]["prompt_tokens"] > 0
    assert emulator.calls[-1].body == {"text": ["one", "two"]}
    assert emulator.calls[-1].path.endswith(f"/ai/run/{model}")


async def test_embeddings_base64_and_fixed_dimensions(emulator, client):
    model = "@cf/baai/bge-m3"
    result = await ADAPTER.embeddings(client, target(emulator, model=model), {"input": "x", "encoding_format": "base64"}, TIMEOUTS)
    raw = base64.b64decode(result.body["data"][0]["embedding"])
    assert len(raw) == 4 * content.DEFAULT_EMBEDDING_DIMENSIONS

    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.embeddings(client, target(emulator, model=model), {"input": "x", "dimensions": 3}, TIMEOUTS)
    assert caught.value.kind is ErrorKind.BAD_REQUEST


async def test_flux_image_comes_back_as_b64_json(emulator, client):
    model = "@cf/black-forest-labs/flux-1-schnell"
    result = await ADAPTER.images(client, target(emulator, model=model), {"prompt": "a cat", "n": 1}, TIMEOUTS)

    [image] = result.body["data"]
    assert base64.b64decode(image["b64_json"]) == content.TINY_PNG
    assert emulator.calls[-1].body == {"prompt": "a cat", "steps": 4}


async def test_raw_image_bytes_and_url_format(emulator, client):
    model = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
    result = await ADAPTER.images(client, target(emulator, model=model), {"prompt": "a dog", "response_format": "url"}, TIMEOUTS)

    assert result.body["data"][0]["url"] == f"data:image/png;base64,{content.TINY_PNG_B64}"


async def test_image_rate_limit(emulator, client):
    model = "@cf/black-forest-labs/flux-1-schnell"
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.images(client, target(emulator, token="t;429", model=model), {"prompt": "a cat"}, TIMEOUTS)

    assert caught.value.kind is ErrorKind.RATE_LIMITED


async def test_whisper_sends_raw_audio(emulator, client):
    audio = b"RIFF" + bytes(200)
    result = await ADAPTER.transcription(
        client, target(emulator, model="@cf/openai/whisper"), ("a.wav", audio, "audio/wav"), {"model": "w"}, TIMEOUTS
    )

    assert result.body == {"text": content.transcript_text("audio", len(audio))}
    call = emulator.calls[-1]
    assert call.form["audio"]["size"] == len(audio)
    assert call.headers["content-type"] == "application/octet-stream"


async def test_whisper_turbo_sends_base64_json_and_verbose_json(emulator, client):
    audio = bytes(range(256))
    fields = {"model": "w", "response_format": "verbose_json", "language": "en"}
    model = "@cf/openai/whisper-large-v3-turbo"
    result = await ADAPTER.transcription(client, target(emulator, model=model), ("a.mp3", audio, "audio/mpeg"), fields, TIMEOUTS)

    assert result.body["text"] == content.transcript_text("audio", len(audio))
    assert result.body["language"] == "en"
    assert result.body["duration"] > 0
    assert result.body["segments"][0]["text"] == result.body["text"]
    assert base64.b64decode(emulator.calls[-1].body["audio"]) == audio


async def test_whisper_text_vtt_and_srt_formats(emulator, client):
    audio = bytes(50)
    model = "@cf/openai/whisper"
    text = await ADAPTER.transcription(client, target(emulator, model=model), ("a.wav", audio, "audio/wav"), {"response_format": "text"}, TIMEOUTS)
    vtt = await ADAPTER.transcription(client, target(emulator, model=model), ("a.wav", audio, "audio/wav"), {"response_format": "vtt"}, TIMEOUTS)

    srt = await ADAPTER.transcription(client, target(emulator, model=model), ("a.wav", audio, "audio/wav"), {"response_format": "srt"}, TIMEOUTS)

    assert text.body == content.transcript_text("audio", len(audio))
    assert vtt.body.startswith("WEBVTT")
    assert srt.body == f"1\n00:00:00,000 --> 00:00:01,000\n{text.body}\n"


def test_vtt_to_srt_numbers_cues_and_adds_hours():
    vtt = "WEBVTT\n\nNOTE made by whisper\n\n00:01.500 --> 00:02.000\nhello\n\n01:02:03.250 --> 01:02:04.000 align:start\nworld\nagain\n"

    assert vtt_to_srt(vtt) == "1\n00:00:01,500 --> 00:00:02,000\nhello\n\n2\n01:02:03,250 --> 01:02:04,000\nworld\nagain\n"


async def test_whisper_auth_error(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.transcription(
            client, target(emulator, token="t;401", model="@cf/openai/whisper"), ("a.wav", b"abc", "audio/wav"), {}, TIMEOUTS
        )

    assert caught.value.kind is ErrorKind.AUTH
