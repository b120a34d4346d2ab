"""GET /v1/freellm/routes and /v1/freellm/requests/{id}, through the official openai client's raw requests."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

HI = [{"role": "user", "content": "hi"}]


def _client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def _key_for(user) -> str:
    from routing.services import api_key_create

    return api_key_create(user=user, name="script")[1]


@pytest.fixture
def staff(gateway, django_user_model):
    from routing.services import team_groups_sync

    user = django_user_model.objects.create_user("sam", is_staff=True)
    user.groups.add(team_groups_sync()["Staff"])
    return user


@pytest.fixture
def member(gateway, django_user_model):
    from routing.services import team_groups_sync

    user = django_user_model.objects.create_user("mia")
    user.groups.add(team_groups_sync()["Members"])
    return user


def test_routes_report_every_route_with_its_state(gateway, emulator, staff):
    from providers.models import ProviderKey, UpstreamModel

    add_provider(emulator, "groq", ["good", "down;503", "off", "revoked"], [{"model_id": "llama", "rpm": 1000}],
                 account_rpd=1000)
    UpstreamModel.objects.create(provider_id=ProviderKey.objects.get(label="groq-0").provider_id, model_id="old",
                                 enabled=False)
    ProviderKey.objects.filter(label="groq-2").update(enabled=False)
    ProviderKey.objects.filter(label="groq-3").update(status=ProviderKey.Status.INVALID,
                                                      status_detail="rejected by groq/llama (401)")
    from routing.config import bump_config_version

    bump_config_version()
    # The two usable keys take turns; once the 503 key has failed for two clients its circuit opens and the
    # good key answers alone (a 503 fails the request over to nobody: the provider's other key is skipped as
    # well). Two unified keys, because one client's 5xx on a route counts once per minute.
    statuses = []
    clients = [gateway.api_key, _key_for(staff)]
    for i in range(8):
        resp = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {clients[i // 2 % 2]}"},
                          json={"model": "groq/llama", "messages": HI})
        statuses.append(resp.status_code)
    assert set(statuses) <= {200, 502} and 2 <= statuses.count(502) <= 4, statuses
    wait_until_idle()

    routes = _client(gateway, _key_for(staff)).get("/freellm/routes", cast_to=object)
    assert routes["object"] == "list"
    by_key = {(r["model"], r["key"]): r for r in routes["data"] if r["provider"] == "groq"}
    assert set(by_key) == {(m, f"groq-{i}") for m in ("llama", "old") for i in range(4)}

    good = by_key[("llama", "groq-0")]
    assert good["state"] == "closed" and good["last_success_at"] and good["last_error"] is None
    assert good["windows"]["rpm"] == {"used": 8 - statuses.count(502), "limit": 1000, "configured": 1000,
                                      "learned": None}
    down = by_key[("llama", "groq-1")]
    calls = good["windows"]["rpd"]["used"] + down["windows"]["rpd"]["used"]
    assert good["windows"]["provider_rpd"] == {"used": calls, "limit": 1000, "configured": 1000, "learned": None}

    assert down["state"] == "open" and down["cooldown_until"] and down["why"] == "circuit open after server_error"
    assert down["last_error"]["kind"] == "server_error" and down["failures"] >= 2

    assert by_key[("llama", "groq-2")]["state"] == "disabled"
    assert by_key[("old", "groq-0")]["state"] == "disabled"
    invalid = by_key[("llama", "groq-3")]
    assert invalid["state"] == "invalid" and "rejected by groq/llama (401)" in invalid["why"]
    assert "good" not in str(routes) and "down;503" not in str(routes)  # no secret


def test_routes_are_refused_to_members_in_openais_shape(gateway, member):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _client(gateway, _key_for(member)).get("/freellm/routes", cast_to=object)
    assert caught.value.status_code == 403
    assert caught.value.body["type"] == "permission_error"
    assert caught.value.body["code"] == "insufficient_permissions"


def test_a_request_is_looked_up_by_its_id(gateway, emulator, staff, member, django_user_model):
    add_provider(emulator, "groq", ["good"], ["llama"])
    add_chain("fast", ["groq/llama"])
    mine = _client(gateway, _key_for(member))
    raw = mine.chat.completions.with_raw_response.create(model="fast", messages=HI)
    request_id = raw.headers["X-FreeLLM-Request-Id"]
    answer = raw.parse()

    wait_until_idle()  # the row is written
    row = mine.get(f"/freellm/requests/{request_id}", cast_to=object)
    assert row["id"] == request_id and row["status"] == 200 and row["outcome"] == "ok"
    assert (row["provider"], row["model"], row["key"]) == ("groq", "llama", "groq-0")
    assert row["trail"] == [{"route": "groq/llama/groq-0", "outcome": "ok", "ms": row["trail"][0]["ms"]}]
    assert row["usage"]["total_tokens"] == answer.usage.total_tokens
    # Staff see anyone's; another member sees nothing, not even that it exists.
    assert _client(gateway, _key_for(staff)).get(f"/freellm/requests/{request_id}", cast_to=object)["id"] == request_id
    other = _client(gateway, _key_for(django_user_model.objects.create_user("otto")))
    for rid in (request_id, "0" * 32):
        with pytest.raises(openai.NotFoundError) as caught:
            other.get(f"/freellm/requests/{rid}", cast_to=object)
        assert caught.value.body["code"] == "request_not_found"
