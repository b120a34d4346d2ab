"""Bad uploads to /v1/audio/transcriptions are refused at the edge, before any upstream quota is spent."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

WAV = b"RIFF$\x00\x00\x00WAVEfmt " + bytes(200)


@pytest.fixture
def whisper(gateway, emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "whisper-large-v3", "kind": "transcription"}])
    add_chain("whisper", ["groq/whisper-large-v3"], kind="transcription")
    return gateway


def _post(gw, **kwargs):
    return httpx.post(f"{gw.base_url}/audio/transcriptions", headers={"Authorization": f"Bearer {gw.api_key}"},
                      timeout=30, **kwargs)


def _error(resp, status):
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


def test_empty_file_is_a_400_without_calling_upstream(whisper, emulator):
    error = _error(_post(whisper, data={"model": "whisper"}, files={"file": ("a.wav", b"", "audio/wav")}), 400)
    assert error["param"] == "file" and "empty" in error["message"]
    assert emulator.calls == []


@pytest.mark.parametrize("files", [{"audio": ("a.wav", WAV, "audio/wav")}, None])
def test_missing_file_field_names_it(whisper, emulator, files):
    error = _error(_post(whisper, data={"model": "whisper"}, files=files), 400)
    assert error["param"] == "file"
    assert error["message"] == "file: Field required"
    assert emulator.calls == []


def test_file_over_the_body_limit_is_a_413(whisper, emulator, settings):
    settings.FREELLM_MAX_BODY_BYTES = 1000
    error = _error(_post(whisper, data={"model": "whisper"}, files={"file": ("a.wav", bytes(1001), "audio/wav")}), 413)
    assert error["param"] == "file" and "1000" in error["message"]
    assert emulator.calls == []
    assert _post(whisper, data={"model": "whisper"}, files={"file": ("a.wav", bytes(1000), "audio/wav")}).status_code == 200


def test_transcription_form_is_documented(gateway):
    schema = httpx.get(f"{gateway.base_url}/openapi.json").json()
    form = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    properties = form["schema"]["properties"]
    assert {"file", "model", "response_format"} <= set(properties)
    assert {"file", "model"} <= set(form["schema"]["required"])


def test_unknown_response_format_is_a_400_naming_it(whisper, emulator):
    error = _error(_post(whisper, data={"model": "whisper", "response_format": "xml"},
                         files={"file": ("a.wav", WAV, "audio/wav")}), 400)
    assert error["param"] == "response_format" and "vtt" in error["message"]
    assert emulator.calls == []
