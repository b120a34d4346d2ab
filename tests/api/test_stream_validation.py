"""A malformed upstream chunk is the upstream failing: failover before the first byte, a stream_interrupted
error event after it (logged as incomplete); an upstream that goes quiet after content ends by the idle
timeout with that event too. Never a 500, never a stream left open."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "tell me a long story please"}]


def _events(gateway, **body) -> tuple[int, list]:
    events = []
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", timeout=15,
                      headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": HI, "stream": True, **body}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
        return resp.status_code, events


@pytest.mark.parametrize("stream", [True, False])
def test_a_malformed_chunk_before_any_content_fails_over(gateway, emulator, stream):
    add_provider(emulator, "broken", ["k;badchunk=0"], ["llama"])
    add_provider(emulator, "backup", ["ok"], ["llama"])
    add_chain("auto", ["broken/llama", "backup/llama"])

    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": HI, "stream": stream})

    assert resp.status_code == 200
    assert resp.headers["X-FreeLLM-Provider"] == "backup"
    assert resp.headers["X-FreeLLM-Trail"].startswith("broken/llama/broken-0 -> server_error")


def _assert_interrupted(events: list) -> None:
    from analytics.models import RequestLog

    assert any(isinstance(e, dict) and e.get("choices") for e in events)  # content came first
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "stream_interrupted"
    wait_until_idle()
    row = RequestLog.objects.get()
    assert (row.status_code, row.outcome) == (502, "incomplete")


def test_a_malformed_chunk_after_content_ends_the_stream_with_an_error_event(gateway, emulator):
    add_provider(emulator, "broken", ["k;badchunk=2"], ["llama"])
    add_chain("auto", ["broken/llama"])

    status, events = _events(gateway)

    assert status == 200
    _assert_interrupted(events)


def test_an_upstream_silent_after_content_ends_by_the_idle_timeout(gateway, emulator, settings):
    settings.FREELLM_IDLE_TIMEOUT = 0.3
    add_provider(emulator, "sleepy", ["k;stall=3"], ["llama"])
    add_chain("auto", ["sleepy/llama"])

    status, events = _events(gateway)

    assert status == 200
    _assert_interrupted(events)
