"""An error after routes were tried still says which ones (X-FreeLLM-Attempts and -Trail), on every endpoint."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("path", "model", "request_kwargs"), [
    ("/chat/completions", "groq/llama", {"json": CHAT}),
    ("/chat/completions", "groq/llama", {"json": {**CHAT, "stream": True}}),
    ("/embeddings", "groq/embed", {"json": {"input": "x"}}),
    ("/images/generations", "groq/flux", {"json": {"prompt": "x"}}),
    ("/audio/speech", "groq/tts", {"json": {"input": "x", "voice": "alloy"}}),
    ("/audio/transcriptions", "groq/whisper", {"data": {}, "files": {"file": ("a.wav", b"RIFF", "audio/wav")}}),
])
def test_failed_routes_are_named_in_the_error_headers(gateway, emulator, path, model, request_kwargs):
    add_provider(emulator, "groq", ["down;500"], ["llama", {"model_id": "embed", "kind": "embedding", "family": "e"},
                                                  {"model_id": "flux", "kind": "image"},
                                                  {"model_id": "tts", "kind": "speech"},
                                                  {"model_id": "whisper", "kind": "transcription"}])
    add_chain("auto", ["groq/llama"])
    kwargs = dict(request_kwargs)
    if "json" in kwargs:
        kwargs["json"] = {**kwargs["json"], "model": model}
    else:
        kwargs["data"] = {"model": model}
    resp = httpx.post(f"{gateway.base_url}{path}", headers={"Authorization": f"Bearer {gateway.api_key}"}, **kwargs)

    assert resp.status_code in (502, 503), resp.text
    assert resp.json()["error"]["message"]
    assert resp.headers["X-FreeLLM-Attempts"] == "1"
    assert resp.headers["X-FreeLLM-Trail"] == f"{model}/groq-0 -> server_error"
    assert "X-FreeLLM-Provider" not in resp.headers
