"""The admin playground's views through Django's test client: the page, a plain (non-stream) answer through the
router as the logged-in member, its request-log row, and who may not use it."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.test import AsyncClient, Client

from tests.fixtures_gateway import add_chain, add_provider
from tests.polling import wait_until, wait_until_async


@pytest.fixture
def member(gateway, django_user_model):
    """alice (the gateway fixture's user) as a team member who may log in to the admin."""
    from routing.services import MEMBERS_GROUP, team_groups_sync

    alice = django_user_model.objects.get(username="alice")
    alice.is_staff = True
    alice.save()
    alice.groups.add(team_groups_sync()[MEMBERS_GROUP])
    return alice


@pytest.fixture
def chain(emulator):
    add_provider(emulator, "groq", ["g;429=60"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])


async def _send(client: AsyncClient, **payload):
    return await client.post("/admin/playground/send", payload, content_type="application/json")


async def _logged_in(user, **kwargs) -> AsyncClient:
    client = AsyncClient(**kwargs)
    await client.aforce_login(user)
    return client


@pytest.fixture
async def settled():
    """The Django test client runs the views on the test's loop: let the rows they queue be written on it."""
    yield
    from routing.api.exchange import background_idle

    assert await wait_until_async(background_idle)


def test_page_lists_chains_and_models(member, chain):
    client = Client()
    client.force_login(member)
    page = client.get("/admin/playground/")
    assert page.status_code == 200
    assert (page.context["chains"], page.context["models"]) == (["auto"], ["gemini/flash", "groq/llama"])
    assert b'name="csrfmiddlewaretoken"' in page.content
    # Linked from the admin index and from every page's user links.
    index = client.get("/admin/").content.decode()
    assert index.count('href="/admin/playground/"') == 2


async def test_plain_answer_through_the_router_as_the_member(member, chain, emulator, settled):
    from routing.models import ApiKey

    client = await _logged_in(member)
    resp = await _send(client, model="auto", system="Be brief.", prompt="hello there", stream=False)
    assert resp.status_code == 200, resp.content
    data = resp.json()
    assert data["completion"]["choices"][0]["message"]["content"] == "Echo: hello there"
    info = data["freellm"]
    assert [step["route"].split("/")[0] for step in info["trail"]] == ["groq", "gemini"]
    assert info["trail"][-1]["outcome"] == "ok" and info["attempts"] == 2
    assert info["usage"]["total_tokens"] == info["usage"]["prompt_tokens"] + info["usage"]["completion_tokens"] > 0
    assert info["latency_ms"] >= 0
    assert (resp["X-FreeLLM-Provider"], resp["X-FreeLLM-Attempts"]) == ("gemini", "2")
    assert resp["X-FreeLLM-Request-Id"] == info["request_id"]
    # The system prompt went upstream ahead of the prompt.
    assert emulator.calls_for(provider="gemini")[-1].body["messages"][0] == {"role": "system", "content": "Be brief."}

    # Sent with the member's playground key, the same one next time.
    assert (await _send(client, model="gemini/flash", prompt="again", stream=False)).status_code == 200
    assert await ApiKey.objects.filter(user=member, name="playground", revoked_at__isnull=True).acount() == 1


def test_streamed_on_the_live_gateway_and_logged_as_playground(member, chain, gateway):
    """Through the real socket with the session cookie and CSRF token a browser would send; the request-log row
    (written by the server's loop, which the test client's does not outlive) says it came from the playground."""
    from analytics.models import RequestLog
    from routing.models import ApiKey

    login = Client()
    login.force_login(member)
    with httpx.Client(base_url=gateway.url, cookies={"sessionid": login.cookies["sessionid"].value}) as http:
        page = http.get("/admin/playground/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        with http.stream("POST", "/admin/playground/send", headers={"X-CSRFToken": token},
                         json={"model": "auto", "prompt": "stream me"}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            events = [block for block in resp.read().decode().split("\n\n") if block]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: stream me"
    (summary,) = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("event: freellm")]
    assert summary["request_id"] == resp.headers["x-freellm-request-id"] and summary["usage"]["total_tokens"] > 0
    assert events[-1] == "data: [DONE]"

    row = wait_until(lambda: RequestLog.objects.filter(request_id=summary["request_id"]).first())
    assert row is not None
    key = ApiKey.objects.get(user=member, name="playground")
    assert (row.user_id, row.api_key_id, row.dialect, row.stream) == (member.pk, key.pk, "playground", True)


async def test_bad_input_and_unknown_model_answer_in_openai_shape(member, chain, settled):
    client = await _logged_in(member)
    empty = await _send(client, model="auto", prompt="")
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "prompt"
    unknown = await _send(client, model="nope", prompt="hi", stream=False)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


@pytest.fixture
def outsider(django_user_model):
    """Logged in to the admin but no team member (no API-key permission)."""
    return django_user_model.objects.create_user("eve", is_staff=True)


async def test_who_may_not_use_it(member, chain, outsider, settled):
    # Anonymous: no answer; the page sends to the login form.
    anonymous = AsyncClient()
    assert (await _send(anonymous, model="auto", prompt="hi")).status_code == 403
    assert (await anonymous.get("/admin/playground/")).status_code == 302
    client = await _logged_in(outsider)
    assert (await client.get("/admin/playground/")).status_code == 403
    assert (await _send(client, model="auto", prompt="hi")).status_code == 403
    # The admin's CSRF protection applies: no token, no request.
    strict = await _logged_in(member, enforce_csrf_checks=True)
    assert (await _send(strict, model="auto", prompt="hi", stream=False)).status_code == 403
