"""Provider keys never reach the client or the request log, even when a provider quotes them in its errors."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_native, add_provider, wait_until_idle

TOKEN = "s3cr3t-TOKEN-4242"
KINDS = ["openai", "gemini", "cohere", "cloudflare"]


def _route(emulator, kind: str, key: str, slug: str | None = None) -> str:
    if kind == "openai":
        add_provider(emulator, slug or "groq", [key], ["llama"])
        return f"{slug or 'groq'}/llama"
    return add_native(emulator, kind, key, slug)


def _assert_no_secret(resp: httpx.Response) -> None:
    from analytics.models import RequestLog
    from providers.models import ProviderKey

    wait_until_idle()
    assert TOKEN not in resp.text
    assert all(TOKEN not in value for value in resp.headers.values())
    rows = list(RequestLog.objects.values())
    assert rows and TOKEN not in repr(rows)
    assert TOKEN not in repr(list(ProviderKey.objects.values_list("status_detail", flat=True)))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_a_rejected_request_does_not_echo_the_key(gateway, emulator, kind, stream):
    add_chain("auto", [_route(emulator, kind, f"{TOKEN};fail=1:400;echo")])
    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})

    assert resp.status_code == 400, resp.text
    # The provider did quote the key: the gateway is what keeps it in.
    assert "(key: ***" in resp.json()["error"]["message"]
    assert resp.headers["X-FreeLLM-Attempts"] == "1"
    _assert_no_secret(resp)


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_refused_upstream_is_marked_without_storing_it(gateway, emulator, kind):
    add_chain("auto", [_route(emulator, kind, f"{TOKEN};401;echo"), _route(emulator, "openai", "ok", "backup")])
    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})

    assert resp.status_code == 200 and resp.headers["X-FreeLLM-Provider"] == "backup"
    _assert_no_secret(resp)
