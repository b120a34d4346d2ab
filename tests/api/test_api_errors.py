"""Every error path answers in OpenAI's shape with the right status, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama", {"model_id": "embed-1", "kind": "embedding", "family": "e"}])
    add_chain("auto", ["groq/llama"])
    return gateway


def _post(gw, path, *, key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    headers.setdefault("Authorization", f"Bearer {key or gw.api_key}")
    return httpx.post(f"{gw.base_url}{path}", headers=headers, timeout=10, **kwargs)


def _assert_openai_error(resp, status, code=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code:
        assert err["code"] == code


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_malformed_json_is_400(configured):
    _assert_openai_error(_post(configured, "/chat/completions", content=b"{nope",
                               headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "auto", "messages": []}, "messages"),
    ({"model": "auto", "messages": [{"content": "x"}]}, "messages.0.role"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
])
def test_bad_field_is_400_naming_it(configured, body, param):
    resp = _post(configured, "/chat/completions", json=body)
    _assert_openai_error(resp, 400)
    assert resp.json()["error"]["param"] == param


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer fl-wrong"}, {"Authorization": "Basic abc"}])
def test_bad_or_missing_key_is_401(configured, headers):
    resp = httpx.post(f"{configured.base_url}/chat/completions", json=CHAT, headers=headers)
    _assert_openai_error(resp, 401, "invalid_api_key")


def test_x_api_key_header_is_accepted(configured):
    resp = httpx.post(f"{configured.base_url}/chat/completions", json=CHAT, headers={"x-api-key": configured.api_key})
    assert resp.status_code == 200


def test_revoked_key_is_401(configured):
    from routing.models import ApiKey
    from routing.services import api_key_revoke

    assert _post(configured, "/chat/completions", json=CHAT).status_code == 200
    api_key_revoke(api_key=ApiKey.objects.get())
    _assert_openai_error(_post(configured, "/chat/completions", json=CHAT), 401)


def test_unknown_model_is_404_never_a_reroute(configured, emulator):
    _assert_openai_error(_post(configured, "/chat/completions", json={**CHAT, "model": "groq/nope"}), 404,
                         "model_not_found")
    assert emulator.calls == []


def test_disabled_model_is_404(configured):
    from providers.models import UpstreamModel

    UpstreamModel.objects.filter(model_id="llama").update(enabled=False)
    from routing.config import bump_config_version

    bump_config_version()
    _assert_openai_error(_post(configured, "/chat/completions", json={**CHAT, "model": "groq/llama"}), 404)


def test_embedding_model_for_chat_is_400(configured):
    _assert_openai_error(_post(configured, "/chat/completions", json={**CHAT, "model": "groq/embed-1"}), 400,
                         "model_kind_mismatch")


def test_body_too_large_is_413(configured, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    resp = _post(configured, "/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]})
    _assert_openai_error(resp, 413)


def test_unknown_endpoint_is_404_json(configured):
    _assert_openai_error(_post(configured, "/nope", json={}), 404)


def test_no_key_configured_is_503(configured):
    from providers.models import ProviderKey

    ProviderKey.objects.all().delete()
    _assert_openai_error(_post(configured, "/chat/completions", json=CHAT), 503, "no_upstream")


def test_server_keeps_serving_after_errors(configured):
    for body in (b"{", b"[]", b'{"model": 1}', b"\xff\xfe"):
        _post(configured, "/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert _post(configured, "/chat/completions", json=CHAT).status_code == 200
