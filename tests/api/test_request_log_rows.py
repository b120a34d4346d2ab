"""Every request that names a model leaves one request-log row, whatever stopped it: the team sees wrong model
names and requests no model could serve, not only the ones that reached an upstream."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama", {"model_id": "embed", "kind": "embedding", "family": "e"}])
    add_chain("auto", ["groq/llama"])
    return gateway


def _rows():
    from analytics.models import RequestLog

    wait_until_idle()
    return list(RequestLog.objects.order_by("id").values("requested_model", "status_code", "outcome", "attempts",
                                                         "error", "endpoint"))


def _post(gw, path, body):
    return httpx.post(f"{gw.base_url}{path}", json=body, headers={"Authorization": f"Bearer {gw.api_key}"})


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/chat/completions", {"model": "groq/nope", "messages": HI}, 404, "model_not_found"),
    ("/chat/completions", {"model": "groq/embed", "messages": HI}, 400, "model_kind_mismatch"),
    ("/chat/completions", {"model": "auto", "messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]},
     422, "no_capable_model"),
    ("/embeddings", {"model": "auto", "input": "x"}, 400, "model_kind_mismatch"),
])
def test_a_request_refused_before_any_call_is_logged(configured, emulator, path, body, status, code):
    resp = _post(configured, path, body)
    assert resp.status_code == status and resp.json()["error"]["code"] == code

    [row] = _rows()
    assert (row["requested_model"], row["status_code"], row["outcome"], row["attempts"]) == (
        body["model"], status, "client_error", 0)
    assert row["error"] == resp.json()["error"]["message"][:500]
    assert emulator.calls == []


def test_a_model_name_longer_than_the_column_is_logged_cut_short(configured):
    assert _post(configured, "/chat/completions", {"model": "m" * 5000, "messages": HI}).status_code == 404
    assert _post(configured, "/chat/completions", {"model": "auto", "messages": HI}).status_code == 200

    rows = _rows()
    assert [row["status_code"] for row in rows] == [404, 200]
    assert rows[0]["requested_model"] == "m" * 200


def test_a_failed_request_is_logged_once(configured, emulator):
    add_provider(emulator, "down", ["d;500"], ["m"])
    assert _post(configured, "/chat/completions", {"model": "down/m", "messages": HI}).status_code == 502

    [row] = _rows()
    assert (row["status_code"], row["outcome"], row["attempts"]) == (502, "upstream_error", 1)


def test_each_row_names_the_dialect_and_the_admin_filters_by_it(configured, admin_client):
    from analytics.models import RequestLog

    assert _post(configured, "/chat/completions", {"model": "auto", "messages": HI}).status_code == 200
    wait_until_idle()
    assert list(RequestLog.objects.values_list("dialect", flat=True)) == ["openai"]
    RequestLog.objects.create(**{**RequestLog.objects.values().get(), "id": None, "dialect": "anthropic"})

    page = admin_client.get("/admin/analytics/requestlog/?dialect=anthropic")
    assert page.status_code == 200
    assert [row.dialect for row in page.context["cl"].result_list] == ["anthropic"]
