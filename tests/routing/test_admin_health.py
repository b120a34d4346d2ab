"""Route health in the admin: the quota windows page, the key health column on provider pages, and
"clear cooldown" (from quota windows or from provider keys) really putting a key back into service."""

from __future__ import annotations

import re
from datetime import timedelta

import openai
import pytest
from django.urls import reverse
from django.utils import timezone

from providers.adapters.base import ErrorKind
from providers.models import Provider, ProviderKey, UpstreamModel
from routing.models import QuotaWindow
from routing.quota.base import Lease, Limits, Route
from routing.quota.local import LocalQuotaStore
from tests.fixtures_gateway import add_provider

QUOTA_LIST = "/admin/routing/quotawindow/"
KEY_LIST = "/admin/providers/providerkey/"


@pytest.fixture
def local_store(settings):
    """Embedded mode: the quota state lives in this process, and admin pages roll it up when opened."""
    from routing.quota import set_quota_store

    settings.REDIS_URL = ""
    store = LocalQuotaStore(lease_ttl=60)
    set_quota_store(store)
    yield store
    set_quota_store(None)


@pytest.fixture
def groq(db) -> Provider:
    groq = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    ProviderKey.objects.create(provider=groq, label="good", secret="gsk_good_0000000001")
    ProviderKey.objects.create(provider=groq, label="busy", secret="gsk_busy_0000000002")
    ProviderKey.objects.create(provider=groq, label="dead", secret="gsk_dead_0000000003",
                               status=ProviderKey.Status.INVALID, status_detail="rejected by groq/llama (401)")  # fmt: skip
    UpstreamModel.objects.create(provider=groq, model_id="llama", rpm=30)
    UpstreamModel.objects.create(provider=groq, model_id="qwen", rpm=60)
    return groq


def _route(key: str, model: str = "llama") -> Route:
    return Route("groq", model, key, Limits(rpm=30 if model == "llama" else 60))


def _config_keys() -> set[str]:
    from routing.config import load_routing_config

    return {key.label for model in load_routing_config().models for key in model.keys}


# --- "clear cooldown" brings a key the router left out back into service ------------------------------


def test_clear_cooldown_on_quota_windows_re_enables_a_key_marked_invalid(client, staff_user, groq, local_store):
    local_store.record_now(_route("dead"), ErrorKind.AUTH)
    assert "dead" not in _config_keys()
    client.force_login(staff_user)
    client.get(QUOTA_LIST)  # embedded mode: rolls the live state up into QuotaWindow rows
    rows = list(QuotaWindow.objects.filter(key_label="dead").values_list("pk", flat=True))
    assert rows and set(QuotaWindow.objects.filter(pk__in=rows).values_list("health", flat=True)) == {"key_invalid"}

    response = client.post(QUOTA_LIST, {"action": "clear_cooldown", "_selected_action": rows}, follow=True)

    assert "Cooldown cleared on 2 route(s)" in response.content.decode()
    dead = ProviderKey.objects.get(label="dead")
    # Before the fix the store was cleared but the key stayed INVALID, so the router still left it out.
    assert dead.status == ProviderKey.Status.UNKNOWN and "re-enabled by an admin" in dead.status_detail
    assert "dead" in _config_keys()
    assert isinstance(local_store.reserve_now(_route("dead"), 1), Lease)


def test_clear_cooldown_action_on_provider_keys(client, staff_user, groq, local_store):
    local_store.record_now(_route("busy", "llama"), ErrorKind.RATE_LIMITED, retry_after=600)
    local_store.record_now(_route("busy", "qwen"), ErrorKind.RATE_LIMITED, retry_after=600)
    local_store.record_now(_route("dead"), ErrorKind.AUTH)
    keys = ProviderKey.objects.filter(label__in=["busy", "dead"])
    client.force_login(staff_user)

    response = client.post(KEY_LIST, {"action": "clear_cooldown", "_selected_action": [k.pk for k in keys]},
                           follow=True)  # fmt: skip

    assert "Cooldown cleared on 4 route(s)" in response.content.decode()
    for model in ("llama", "qwen"):
        assert isinstance(local_store.reserve_now(_route("busy", model), 1), Lease)
        assert isinstance(local_store.reserve_now(_route("dead", model), 1), Lease)
    assert ProviderKey.objects.get(label="dead").status == ProviderKey.Status.UNKNOWN
    assert ProviderKey.objects.get(label="good").status == ProviderKey.Status.UNKNOWN  # untouched, never tested
    assert {"good", "busy", "dead"} <= _config_keys()


@pytest.mark.django_db(transaction=True)
def test_a_key_that_failed_auth_serves_again_after_the_admin_clears_it(gateway, emulator, client, staff_user):
    """End to end: the upstream refuses the key once (401), the router marks it invalid and leaves it out;
    the admin clears it from the provider key list; the next request goes through that key."""
    add_provider(emulator, "groq", ["gsk-flaky;fail=1:401"], ["llama"])
    api = gateway.openai()
    with pytest.raises(openai.APIStatusError):
        api.chat.completions.create(model="groq/llama", messages=[{"role": "user", "content": "hi"}])
    key = ProviderKey.objects.get(provider__slug="groq")
    assert key.status == ProviderKey.Status.INVALID
    client.force_login(staff_user)
    client.post(KEY_LIST, {"action": "clear_cooldown", "_selected_action": [key.pk]})

    reply = api.chat.completions.with_raw_response.create(
        model="groq/llama", messages=[{"role": "user", "content": "hi again"}]
    )
    assert reply.http_response.status_code == 200
    assert reply.headers["x-freellm-trail"] == "groq/llama/groq-0 -> ok"


# --- what the pages show --------------------------------------------------------------------------------


def test_rollup_shows_a_key_marked_invalid_even_when_the_store_forgot_it(client, staff_user, groq, local_store):
    # A fresh store (e.g. after a restart) knows nothing of the auth failure; the database still does,
    # and the router leaves the key out: the quota page must not call its routes healthy.
    client.force_login(staff_user)
    client.get(QUOTA_LIST)

    health = dict(QuotaWindow.objects.filter(window="rpm", model="llama").values_list("key_label", "health"))
    assert health == {"good": "closed", "busy": "closed", "dead": "key_invalid"}


def test_quota_list_shows_health_cooldown_and_learned_beside_configured(client, staff_user, groq, local_store):
    local_store.record_now(_route("busy"), ErrorKind.RATE_LIMITED, retry_after=600)
    local_store.record_now(_route("good"), None, headers={"x-ratelimit-limit-requests-minute": "12"})
    for _ in range(3):
        local_store.reserve_now(_route("good"), 10)
    client.force_login(staff_user)

    html = client.get(QUOTA_LIST + "?window=rpm&model=llama").content.decode()

    rows = {label: row for row in html.split("<tr")[1:] for label in ("good", "busy", "dead") if f"/{label}<" in row}
    assert "open: cooling down" in rows["busy"] and re.search(r"(9|10)m \d\ds left", rows["busy"])
    assert "key invalid<" in rows["dead"]
    assert "3 / 12" in rows["good"] and "configured 30 · learned 12" in rows["good"]
    assert "closed" in rows["good"]
    # Every figure an operator needs is in one of six columns: nothing hides behind a sideways scroll.
    header = html.split('id="result_list"', 1)[1].split("</thead>", 1)[0]
    assert header.count("<th ") == 7  # the checkbox column + six


def test_quota_list_with_no_routes(client, staff_user, local_store, db):
    client.force_login(staff_user)
    response = client.get(QUOTA_LIST)
    assert response.status_code == 200 and "0 quota windows" in response.content.decode()


def test_provider_pages_show_each_keys_health_linked_to_its_quota_windows(client, staff_user, groq, local_store):
    local_store.record_now(_route("busy", "llama"), ErrorKind.RATE_LIMITED, retry_after=90)
    client.force_login(staff_user)

    for url in (KEY_LIST, reverse("admin:providers_provider_change", args=[groq.pk])):
        html = client.get(url).content.decode()
        link = re.search(r'<a href="(/admin/routing/quotawindow/\?provider=groq&amp;key_label=busy)"[^>]*>(.*?)</a>',
                         html, re.S)  # fmt: skip
        assert link, url
        assert "open: cooling down" in link.group(2) and "on 1 model" in link.group(2)
        assert "key invalid<" in html
        listed = client.get(link.group(1).replace("&amp;", "&")).content.decode()
        assert "groq/llama/busy" in listed and "groq/llama/good" not in listed


def test_key_health_is_a_dash_before_any_snapshot(client, staff_user, groq, settings):
    # With Redis, rows come from the worker's rollup; until the first one there is nothing to show.
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    client.force_login(staff_user)
    html = client.get(KEY_LIST).content.decode()
    assert "quotawindow/?provider=groq" not in html
    assert html.count('<td class="field-key_health">—</td>') == 3


def test_quota_list_marks_an_expired_cooldown_without_time_left(client, staff_user, groq, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # no in-process rollup: the rows below are what shows
    QuotaWindow.objects.create(provider="groq", model="llama", key_label="busy", window="rpm", used=1, limit=30,
                               configured_limit=30, health="half_open", failures=2,
                               cooldown_until=timezone.now() - timedelta(seconds=5), updated_at=timezone.now())  # fmt: skip
    client.force_login(staff_user)
    html = client.get(QUOTA_LIST).content.decode()
    assert "half-open: on trial" in html and "2 failures in a row" in html
    assert "the next request is a single trial" in html  # the meaning, on hover
    assert not re.search(r"\d+s left", html)


def test_refresh_now_button_works_on_an_empty_list(client, staff_user, groq, settings, redis_url):
    """With Redis, rows come from the worker's rollup; before its first run the list is empty and an
    action (which needs selected rows) cannot refresh it: the button can."""
    from routing.quota import build_quota_store, set_quota_store

    settings.REDIS_URL = redis_url
    set_quota_store(build_quota_store())
    try:
        client.force_login(staff_user)
        assert "0 quota windows" in client.get(QUOTA_LIST).content.decode()
        refresh = reverse("admin:routing_quotawindow_refresh")
        assert client.get(refresh).status_code == 403  # reads the store and writes rows: POST only

        response = client.post(refresh + "?window=rpm", follow=True)

        assert response.redirect_chain[-1][0] == QUOTA_LIST + "?window=rpm"
        page = response.content.decode()
        assert "24 quota window(s) refreshed" in page  # 2 models × 3 keys (the invalid one too) × 4 windows
        assert "groq/llama/good" in page and "groq/qwen/dead" in page
    finally:
        set_quota_store(None)


def test_model_page_shows_each_keys_quota_with_learned_limits(client, staff_user, groq, local_store):
    llama = UpstreamModel.objects.get(model_id="llama")
    url = reverse("admin:providers_upstreammodel_change", args=[llama.pk])
    local_store.record_now(_route("good"), None, headers={"x-ratelimit-limit-requests-minute": "12"})
    for _ in range(3):
        local_store.reserve_now(_route("good"), 10)
    client.force_login(staff_user)

    page = client.get(url).content.decode()

    table = page.split("Quota now", 1)[1]
    good = table.split("<td>good</td>", 1)[1].split("</tr>", 1)[0]
    assert "3 / 12" in good and "learned 12" in good and "closed" in good
    dead = table.split("<td>dead</td>", 1)[1].split("</tr>", 1)[0]
    assert "key invalid" in dead
    assert "/admin/routing/quotawindow/?provider=groq&amp;model=llama" in table


def test_model_page_before_any_snapshot(client, staff_user, groq, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # rows come from the worker, which has not run
    client.force_login(staff_user)
    llama = UpstreamModel.objects.get(model_id="llama")
    page = client.get(reverse("admin:providers_upstreammodel_change", args=[llama.pk])).content.decode()
    assert "No snapshot yet" in page


def test_provider_wide_windows_are_named_as_such(client, staff_user, groq, local_store):
    groq.account_rpd = 1000
    groq.save()
    client.force_login(staff_user)
    page = client.get(QUOTA_LIST + "?window=provider_rpd").content.decode()
    assert ">groq (every model and key)</a>" in page


def test_provider_list_shows_the_worst_route_state(client, staff_user, groq, local_store):
    Provider.objects.create(slug="calm", name="Calm", base_url="http://127.0.0.1:9/v1")
    local_store.record_now(_route("busy", "qwen"), ErrorKind.RATE_LIMITED, retry_after=90)
    client.force_login(staff_user)

    page = client.get(reverse("admin:providers_provider_changelist")).content.decode()

    groq_row = page.split(">groq</a>", 1)[1].split("</tr>", 1)[0]
    # "dead" is invalid on both models, "busy" cools down on one: the worst state, over three routes.
    assert "key invalid" in groq_row and "on 3 routes" in groq_row
    assert 'href="/admin/routing/quotawindow/?provider=groq"' in groq_row
    calm_row = page.split(">calm</a>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="field-provider_health">—</td>' in calm_row  # no key, no model: no routes


def test_provider_pages_show_live_health_in_embedded_mode_without_writing(client, staff_user, groq, local_store):
    """A page view is a GET: it reads the in-process quota state and writes no snapshot row."""
    local_store.record_now(_route("busy", "llama"), ErrorKind.RATE_LIMITED, retry_after=90)
    client.force_login(staff_user)
    llama = UpstreamModel.objects.get(model_id="llama")
    # The provider's worst state is its invalid key; the key and model pages show the busy key cooling down.
    provider_list = client.get(reverse("admin:providers_provider_changelist")).content.decode()
    assert "key invalid" in provider_list and "on 3 routes" in provider_list
    for url in (reverse("admin:providers_provider_change", args=[groq.pk]), KEY_LIST,
                reverse("admin:providers_upstreammodel_change", args=[llama.pk])):  # fmt: skip
        assert "open: cooling down" in client.get(url).content.decode(), url

    assert not QuotaWindow.objects.exists()
