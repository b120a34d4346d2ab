"""Gemini, Cohere and Workers AI native routes behind the live gateway: the openai SDK cannot tell them
apart from OpenAI-compatible ones, and their 429s and auth failures drive failover like any other."""

from __future__ import annotations

import base64

import pytest

from tests.emulator import content
from tests.emulator.gemini import SIGNATURE
from tests.fixtures_gateway import ACCOUNT, WEATHER_TOOL, add_chain, add_native, add_provider


@pytest.mark.parametrize("kind", ["gemini", "cohere", "cloudflare"])
def test_native_route_answers_plain_and_streamed(gateway, emulator, kind):
    add_chain("auto", [add_native(emulator, kind, "ok")])
    client = gateway.openai()

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello native"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello native"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert raw.headers["X-FreeLLM-Provider"] == kind

    chunks = list(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "stream me please"}], stream=True,
        stream_options={"include_usage": True},
    ))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "Echo: stream me please"
    assert len(pieces) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(("first", "second"), [("gemini", "cohere"), ("cohere", "cloudflare"), ("cloudflare", "gemini")])
def test_native_429_fails_over_and_the_route_cools_down(gateway, emulator, first, second):
    add_chain("auto", [add_native(emulator, first, "busy;429=30"), add_native(emulator, second, "ok")])
    client = gateway.openai()

    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["X-FreeLLM-Provider"] == second
    # The wait the provider asked for (RetryInfo, Retry-After, the daily allocation) kept the router away.
    assert len(emulator.calls_for(provider=first)) == 1
    assert len(emulator.calls_for(provider=second)) == 3


@pytest.mark.parametrize("kind", ["gemini", "cohere", "cloudflare"])
def test_native_auth_failure_marks_the_key_invalid_and_fails_over(gateway, emulator, kind):
    from providers.models import ProviderKey

    add_chain("auto", [add_native(emulator, kind, "bad;401"), add_native(emulator, "gemini", "ok", slug="backup")])
    raw = gateway.openai().chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])

    assert raw.headers["X-FreeLLM-Provider"] == "backup"
    assert ProviderKey.objects.get(label=f"{kind}-0").status == ProviderKey.Status.INVALID


def test_gemini_tool_call_round_trip_keeps_the_thought_signature(gateway, emulator):
    add_native(emulator, "gemini", "ok")
    add_chain("auto", ["gemini/gemini-3-flash-preview"])
    client = gateway.openai()
    question = {"role": "user", "content": "call tool for Oslo"}

    first = client.chat.completions.create(model="auto", messages=[question], tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    second = client.chat.completions.create(
        model="auto",
        tools=[WEATHER_TOOL],
        messages=[
            question,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )

    assert second.choices[0].message.content == 'Tool said: {"result": "sunny"}'
    sent = emulator.calls_for(provider="gemini")[-1].body["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == SIGNATURE


@pytest.mark.parametrize(
    ("kind", "model_id", "path"),
    [
        ("gemini", "gemini-embedding-001", "gemini/v1beta"),
        ("cohere", "embed-v4.0", "cohere/v2"),
        ("cloudflare", "@cf/baai/bge-m3", "cloudflare/client/v4"),
    ],
)
def test_native_embeddings_through_the_sdk(gateway, emulator, kind, model_id, path):
    key = f"{ACCOUNT}:ok" if kind == "cloudflare" else "ok"
    add_provider(emulator, kind, [key], [{"model_id": model_id, "kind": "embedding", "family": kind}],
                 adapter=kind, path=path)
    add_chain("embed", [f"{kind}/{model_id}"], kind="embedding")

    # The openai SDK asks for base64 unless told otherwise and decodes it: both paths must round-trip.
    as_base64 = gateway.openai().embeddings.create(model="embed", input=["one", "two"])
    as_floats = gateway.openai().embeddings.create(model="embed", input="one", encoding_format="float")

    assert len(as_base64.data) == 2
    assert as_base64.data[0].embedding == pytest.approx(content.embedding_vector("one"), abs=1e-6)
    assert as_floats.data[0].embedding == content.embedding_vector("one")
    assert as_base64.usage.prompt_tokens > 0


def test_workers_ai_image_and_whisper_through_the_sdk(gateway, emulator):
    add_provider(emulator, "cloudflare", [f"{ACCOUNT}:ok"], [
        {"model_id": "@cf/black-forest-labs/flux-1-schnell", "kind": "image"},
        {"model_id": "@cf/openai/whisper-large-v3-turbo", "kind": "transcription"},
    ], adapter="cloudflare", path="cloudflare/client/v4")
    add_chain("images", ["cloudflare/@cf/black-forest-labs/flux-1-schnell"], kind="image")
    add_chain("whisper", ["cloudflare/@cf/openai/whisper-large-v3-turbo"], kind="transcription")
    client = gateway.openai()

    image = client.images.generate(model="images", prompt="a lighthouse", response_format="b64_json")
    audio = b"RIFF$\x00\x00\x00WAVEfmt " + bytes(100)
    transcript = client.audio.transcriptions.create(model="whisper", file=("a.wav", audio, "audio/wav"))

    assert base64.b64decode(image.data[0].b64_json) == content.TINY_PNG
    assert transcript.text == content.transcript_text("audio", len(audio))
