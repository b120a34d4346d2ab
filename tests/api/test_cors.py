"""CORS on the API surfaces (browser apps calling /v1 with a bearer key); the admin never answers cross-origin."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

ORIGIN = "https://app.example.com"
SDK_HEADERS = ("authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization, "
               "anthropic-version, anthropic-beta, x-api-key, x-session-id, x-goog-api-key")


def preflight(gateway, path: str, *, origin: str = ORIGIN, headers: str = SDK_HEADERS) -> httpx.Response:
    return httpx.options(f"{gateway.url}{path}", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers,
    })


def test_a_preflight_is_answered_with_what_the_sdks_send(gateway):
    resp = preflight(gateway, "/v1/chat/completions", headers=SDK_HEADERS + ", x-evil")

    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "POST" in resp.headers["access-control-allow-methods"]
    granted = [h.strip() for h in resp.headers["access-control-allow-headers"].split(",")]
    assert granted == [h.strip() for h in SDK_HEADERS.split(",")]  # x-evil is not among them
    assert int(resp.headers["access-control-max-age"]) > 0


def test_answers_and_errors_expose_the_trail_headers(gateway, emulator):
    add_provider(emulator, "groq", ["g"], ["llama"])
    add_chain("auto", ["groq/llama"])
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}

    ok = httpx.post(f"{gateway.base_url}/chat/completions", json=body,
                    headers={"Authorization": f"Bearer {gateway.api_key}", "Origin": ORIGIN})
    refused = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers={"Origin": ORIGIN})

    assert ok.status_code == 200 and refused.status_code == 401
    for resp in (ok, refused):
        assert resp.headers["access-control-allow-origin"] == "*"
        exposed = resp.headers["access-control-expose-headers"]
        assert "X-FreeLLM-Trail" in exposed and "X-FreeLLM-Provider" in exposed and "Retry-After" in exposed
    # Without an Origin (not a browser) nothing is added.
    plain = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert "access-control-allow-origin" not in plain.headers


def test_a_configured_origin_list_allows_only_those(gateway, settings):
    settings.FREELLM_CORS_ORIGINS = [ORIGIN, "http://localhost:5173"]

    allowed = preflight(gateway, "/v1/chat/completions")
    other = preflight(gateway, "/v1/chat/completions", origin="https://evil.example.net")
    answer = httpx.get(f"{gateway.base_url}/models",
                       headers={"Authorization": f"Bearer {gateway.api_key}", "Origin": "https://evil.example.net"})

    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in allowed.headers["vary"]
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    assert other.json()["error"]["code"] == "cors_origin_not_allowed"
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_an_empty_setting_turns_cors_off(gateway, settings):
    settings.FREELLM_CORS_ORIGINS = []

    assert preflight(gateway, "/v1/chat/completions").status_code == 403


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/"])
def test_the_admin_never_answers_cross_origin(gateway, path):
    resp = preflight(gateway, path)
    page = httpx.get(f"{gateway.url}{path}", headers={"Origin": ORIGIN})

    assert "access-control-allow-origin" not in resp.headers
    assert "access-control-allow-origin" not in page.headers


@pytest.mark.parametrize("path", ["/metrics", "/livez"])
def test_the_ops_endpoints_never_answer_cross_origin(gateway, path):
    resp = httpx.get(f"{gateway.url}{path}", headers={"Origin": ORIGIN})

    assert "access-control-allow-origin" not in resp.headers
    assert preflight(gateway, path).headers.get("access-control-allow-origin") is None


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses", "/v1beta/models/flash:generateContent", "/api/chat"])
def test_every_api_surface_answers_preflights(gateway, path):
    resp = preflight(gateway, path)

    assert resp.status_code == 204 and resp.headers["access-control-allow-origin"] == "*"
