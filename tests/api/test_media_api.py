"""Images and audio through the live gateway with the openai client: routed, failed over, right formats."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider

WAV = b"RIFF$\x00\x00\x00WAVEfmt " + bytes(200)


@pytest.fixture
def image_chain(emulator):
    # The first provider's only key always fails: every answer below proves failover.
    add_provider(emulator, "together", ["t;500"], [{"model_id": "flux-free", "kind": "image"}])
    add_provider(emulator, "cloudflare", ["c"], [{"model_id": "flux-schnell", "kind": "image"}])
    add_chain("images", ["together/flux-free", "cloudflare/flux-schnell"], kind="image")


@pytest.fixture
def audio_chains(emulator):
    add_provider(emulator, "groq", ["g;429=30"], [
        {"model_id": "whisper-large-v3", "kind": "transcription"},
        {"model_id": "playai-tts", "kind": "speech"},
    ])
    add_provider(emulator, "hf", ["h"], [
        {"model_id": "whisper-small", "kind": "transcription"},
        {"model_id": "kokoro", "kind": "speech"},
    ])
    add_chain("whisper", ["groq/whisper-large-v3", "hf/whisper-small"], kind="transcription")
    add_chain("tts", ["groq/playai-tts", "hf/kokoro"], kind="speech")


def test_image_generation_b64_with_failover(gateway, emulator, image_chain):
    raw = gateway.openai().images.with_raw_response.generate(
        model="images", prompt="a lighthouse at dusk", response_format="b64_json", n=2
    )
    result = raw.parse()
    assert len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
    assert raw.headers["X-FreeLLM-Provider"] == "cloudflare"
    assert raw.headers["X-FreeLLM-Attempts"] == "2"
    sent = emulator.calls_for(provider="cloudflare")[0].body
    assert sent["model"] == "flux-schnell" and sent["prompt"] == "a lighthouse at dusk" and sent["n"] == 2


def test_image_generation_url(gateway, emulator, image_chain):
    result = gateway.openai().images.generate(model="images", prompt="a cat", response_format="url")
    assert result.data[0].url.endswith("/_emulator/tiny.png")


def test_image_request_to_a_chat_chain_is_refused(gateway, emulator, image_chain):
    add_provider(emulator, "groq", ["g"], ["llama"])
    add_chain("auto", ["groq/llama"])
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().images.generate(model="auto", prompt="a cat")
    assert caught.value.body["code"] == "model_kind_mismatch"
    assert emulator.calls == []


@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json"])
def test_transcription_formats_with_failover(gateway, emulator, audio_chains, response_format):
    raw = gateway.openai().audio.transcriptions.with_raw_response.create(
        model="whisper", file=("hello.wav", WAV, "audio/wav"), response_format=response_format, language="en"
    )
    assert raw.headers["X-FreeLLM-Provider"] == "hf"
    result = raw.parse()
    if response_format == "text":
        assert raw.headers["content-type"].startswith("text/plain")
        text = result
    else:
        assert raw.headers["content-type"].startswith("application/json")
        text = result.text
    assert text.strip()
    if response_format == "verbose_json":
        assert result.segments and result.language
    upload = emulator.calls_for(provider="hf")[0].form
    assert upload["model"] == "whisper-small" and upload["language"] == "en"
    assert upload["file"] == {"filename": "hello.wav", "size": len(WAV), "content_type": "audio/wav"}
    assert upload["response_format"] == response_format
    # The rate-limited route was called once, then its cooldown kept it out.
    assert len(emulator.calls_for(provider="groq")) == 1


def test_transcription_without_model_or_file_is_a_400(gateway, emulator, audio_chains):
    import httpx

    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    no_model = httpx.post(f"{gateway.base_url}/audio/transcriptions", headers=headers,
                          files={"file": ("a.wav", WAV, "audio/wav")})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    no_file = httpx.post(f"{gateway.base_url}/audio/transcriptions", headers=headers, data={"model": "whisper"})
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]["message"]
    assert emulator.calls == []


@pytest.mark.parametrize(("response_format", "content_type"), [("mp3", "audio/mpeg"), ("wav", "audio/wav")])
def test_speech_returns_audio_bytes_with_failover(gateway, emulator, audio_chains, response_format, content_type):
    with gateway.openai().audio.speech.with_streaming_response.create(
        model="tts", voice="alloy", input="Hello from freellm", response_format=response_format
    ) as response:
        audio = response.read()
        assert response.headers["content-type"] == content_type
        assert response.headers["X-FreeLLM-Provider"] == "hf"
    assert len(audio) > 0
    sent = emulator.calls_for(provider="hf")[0].body
    assert sent["model"] == "kokoro" and sent["input"] == "Hello from freellm" and sent["voice"] == "alloy"


def test_all_audio_routes_down_is_an_openai_error(gateway, emulator):
    add_provider(emulator, "groq", ["g;500"], [{"model_id": "playai-tts", "kind": "speech"}])
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().audio.speech.create(model="groq/playai-tts", voice="alloy", input="hi")
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"
