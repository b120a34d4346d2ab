"""The upstream emulator itself: key grammar, limiter, failure schedules, recorder, OpenAI SDK compatibility."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.emulator import Emulator, parse_key
from tests.polling import wait_until

MESSAGES = [{"role": "user", "content": "hello"}]


def chat(emulator, key: str, model: str = "m", **extra) -> httpx.Response:
    return httpx.post(
        emulator.base_url("groq") + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, **extra},
        timeout=5,
    )


def test_key_grammar():
    spec = parse_key("alice;429=3;fail=2:503;drop=4;slow=0.5;gap=0.1;rpm=30;tpm=6000;ctx=100;bogus=1")

    assert spec.name == "alice"
    assert (spec.always_status, spec.retry_after) == (429, 3.0)
    assert (spec.fail_count, spec.fail_status) == (2, 503)
    assert (spec.drop_after, spec.slow, spec.gap) == (4, 0.5, 0.1)
    assert (spec.rpm, spec.tpm, spec.ctx) == (30, 6000, 100)
    assert parse_key("plain").always_status is None


def test_rpm_limit_is_per_key_and_model(emulator):
    key = "limited;rpm=2"
    first, second, third = (chat(emulator, key) for _ in range(3))
    other_model = chat(emulator, key, model="other")

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert other_model.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "Rate limit reached for model `m`" in error["message"]
    assert "Limit 2, Used 2, Requested 1" in error["message"]


def test_tpm_limit_counts_prompt_tokens(emulator):
    # "hello" is 2 estimated tokens, so a 5-token budget admits two calls.
    key = "tokens;tpm=5"
    statuses = [chat(emulator, key).status_code for _ in range(3)]
    last = chat(emulator, key)

    assert statuses == [200, 200, 429]
    assert last.headers["x-ratelimit-limit-tokens"] == "5"
    assert "tokens per minute (TPM): Limit 5" in last.json()["error"]["message"]


def test_rate_window_slides():
    # A window long enough for two local calls even on a loaded machine, short enough to wait out.
    with Emulator(window=1.5) as emulator:
        assert chat(emulator, "w;rpm=1").status_code == 200
        assert chat(emulator, "w;rpm=1").status_code == 429
        time.sleep(1.6)
        assert chat(emulator, "w;rpm=1").status_code == 200


def test_fail_n_then_succeed_and_reset_restarts_the_count(emulator):
    key = "flaky;fail=2:503"
    assert [chat(emulator, key).status_code for _ in range(3)] == [503, 503, 200]

    emulator.reset()

    assert emulator.calls == []
    assert chat(emulator, key).status_code == 503


def test_fixed_statuses_and_special_models(emulator):
    assert chat(emulator, "a;502").status_code == 502
    assert chat(emulator, "a;401").status_code == 401
    rate_limited = chat(emulator, "a;429=9")
    assert rate_limited.status_code == 429 and rate_limited.headers["retry-after"] == "9"
    missing = chat(emulator, "a", model="missing-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    too_long = chat(emulator, "a;ctx=1")
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    no_key = httpx.post(emulator.base_url("groq") + "/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert no_key.status_code == 401


def test_recorder_keeps_every_call(emulator):
    chat(emulator, "rec-a", temperature=0.5)
    chat(emulator, "rec-b;500")
    httpx.get(emulator.base_url("mistral") + "/models", headers={"Authorization": "Bearer rec-a"})

    assert len(emulator.calls) == 3
    first, failed = emulator.calls_for(provider="groq")
    assert (first.key, first.model, first.status, first.body["temperature"]) == ("rec-a", "m", 200, 0.5)
    assert first.path == "/groq/v1/chat/completions"
    assert failed.status == 500 and failed.key_name == "rec-b"
    assert [c.provider for c in emulator.calls_for(name="rec-a")] == ["groq", "mistral"]


def test_hang_records_the_client_giving_up(emulator):
    with pytest.raises(httpx.ReadTimeout):
        chat_timeout = httpx.Timeout(5, read=0.2)
        httpx.post(emulator.base_url("groq") + "/chat/completions", headers={"Authorization": "Bearer h;hang"},
                   json={"model": "m", "messages": MESSAGES}, timeout=chat_timeout)

    assert wait_until(lambda: emulator.calls[0].disconnected)
    assert emulator.calls[0].status == 499


def test_stream_disconnect_and_drop_are_recorded(emulator):
    with httpx.stream("POST", emulator.base_url("groq") + "/chat/completions",
                      headers={"Authorization": "Bearer s;gap=0.3"},
                      json={"model": "m", "messages": MESSAGES, "stream": True}, timeout=5) as response:
        next(response.iter_lines())
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", emulator.base_url("groq") + "/chat/completions",
                          headers={"Authorization": "Bearer d;drop=1"},
                          json={"model": "m", "messages": MESSAGES, "stream": True}, timeout=5) as response:
            list(response.iter_lines())

    left, dropped = emulator.calls
    assert wait_until(lambda: left.disconnected) and not left.completed
    assert dropped.dropped and not dropped.disconnected and dropped.chunks_sent == 1


def test_openai_sdk_understands_every_endpoint(emulator):
    client = openai.OpenAI(base_url=emulator.base_url("groq"), api_key="sdk", max_retries=0)

    answer = client.chat.completions.create(model="m", messages=MESSAGES)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    embedding = client.embeddings.create(model="e", input="hi", dimensions=5)  # the SDK asks for base64
    image = client.images.generate(model="i", prompt="cat")
    transcript = client.audio.transcriptions.create(model="w", file=("a.wav", b"RIFF0000", "audio/wav"))
    speech = client.audio.speech.create(model="t", input="hi", voice="alloy")
    models = client.models.list()
    json_answer = client.chat.completions.create(model="m", messages=MESSAGES,
                                                 response_format={"type": "json_object"})

    assert answer.choices[0].message.content == "Echo: hello"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    assert chunks[-1].usage.total_tokens == answer.usage.total_tokens
    assert len(embedding.data[0].embedding) == 5
    assert image.data[0].b64_json
    assert transcript.text == "Transcript of a.wav (8 bytes)."
    assert speech.content.endswith(b"hi")
    assert [m.id for m in models.data][:2] == ["echo-small", "echo-large"]
    assert json_answer.choices[0].message.content == '{"echo": "hello"}'
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=emulator.base_url("groq"), api_key="x;429", max_retries=0).chat.completions.create(
            model="m", messages=MESSAGES
        )


def test_runs_alone_from_the_command_line():
    process = subprocess.Popen([sys.executable, "-m", "tests.emulator", "--port", "0"], stdout=subprocess.PIPE,
                               text=True)
    try:
        url = process.stdout.readline().split()[3]
        response = httpx.post(f"{url}/cerebras/v1/chat/completions", headers={"Authorization": "Bearer cli"},
                              json={"model": "m", "messages": MESSAGES}, timeout=5)
        assert response.json()["choices"][0]["message"]["content"] == "Echo: hello"
        # A process of its own shows its records over HTTP (soak scripts read them there).
        before = time.time()
        httpx.post(f"{url}/groq/v1/chat/completions", headers={"Authorization": "Bearer cli2;503"},
                   json={"model": "m2", "messages": MESSAGES}, timeout=5)
        calls = httpx.get(f"{url}/_emulator/calls", timeout=5).json()
        assert [(c["provider"], c["key_name"], c["model"], c["status"]) for c in calls] == [
            ("cerebras", "cli", "m", 200), ("groq", "cli2", "m2", 503)]
        recent = httpx.get(f"{url}/_emulator/calls", params={"since": before}, timeout=5).json()
        assert [c["key"] for c in recent] == ["cli2;503"]
        assert recent[0]["body"]["messages"] == MESSAGES
    finally:
        process.terminate()
        process.wait(timeout=10)
