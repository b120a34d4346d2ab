"""The gateway's upstream connections: answered calls hand their connection back for the next one."""

from __future__ import annotations

import httpx

from tests.fixtures_gateway import add_chain, add_provider


def _chat(gateway, *, stream: bool) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def test_answers_one_after_another_reuse_one_upstream_connection(gateway, emulator, settings):
    # A connection closed after each answer costs every call a new TCP (and, upstream, TLS) handshake.
    # Another allowlist, another shared client (routing.http): no connection pooled by earlier tests.
    settings.FREELLM_UPSTREAM_ALLOW = f"{settings.FREELLM_UPSTREAM_ALLOW},127.0.0.0/8"
    add_provider(emulator, "groq", ["good-key"], ["llama"])
    add_chain("auto", ["groq/llama"])

    for stream in (False, True, False, True):
        resp = _chat(gateway, stream=stream)
        assert resp.status_code == 200
        if stream:
            assert resp.text.rstrip().endswith("data: [DONE]")

    calls = emulator.calls_for(provider="groq")
    assert len(calls) == 4
    assert len({call.client for call in calls}) == 1, [call.client for call in calls]
