"""What the admin pages say, after a walkthrough with screenshots: labels that tell two things apart, figures
precise enough to read, and hints where an operator would otherwise guess."""

from __future__ import annotations

import html as htmllib
import re
from datetime import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel
from tests.fixtures_analytics import make_log

SECRET = "gsk_live_PAGESECRET_77aa1234"
LONG_DETAIL = "inconclusive: groq/llama server_error (500): groq/llama: HTTP 500: The server had an error " * 2


@pytest.fixture
def groq(db) -> Provider:
    groq = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    ProviderKey.objects.create(provider=groq, label="main", secret=SECRET, status_detail=LONG_DETAIL[:300])
    ProviderKey.objects.create(provider=groq, label="dead", secret="gsk_dead_0000000099",
                               status=ProviderKey.Status.INVALID, status_detail="rejected by groq/llama (401)")  # fmt: skip
    UpstreamModel.objects.create(provider=groq, model_id="llama", context_window=131072, supports_json=True)
    UpstreamModel.objects.create(provider=groq, model_id="qwen")
    return groq


@pytest.fixture
def staff_client(client, staff_user, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # pages show the (empty) snapshot, not the in-process state
    client.force_login(staff_user)
    return client


def _column_headers(page: str, inline: str) -> list[str]:
    table = page.split(f'id="{inline}-group"', 1)[1].split("</thead>", 1)[0]
    return [re.sub(r"<[^>]+>", "", h).strip().lower() for h in re.findall(r"<th[^>]*>(.*?)</th>", table, re.S)]


def test_provider_page_tells_the_secret_input_from_the_stored_value(staff_client, groq):
    page = staff_client.get(reverse("admin:providers_provider_change", args=[groq.pk])).content.decode()

    headers = _column_headers(page, "keys")
    # Two columns used to be called "secret": the write-only input and the masked stored value.
    assert headers.count("secret") == 1 and "current secret" in headers
    assert "…1234" in page and SECRET not in page


def test_key_status_shows_the_verdict_and_a_shortened_detail(staff_client, groq):
    for url in (reverse("admin:providers_provider_change", args=[groq.pk]),
                reverse("admin:providers_providerkey_changelist")):  # fmt: skip
        page = htmllib.unescape(staff_client.get(url).content.decode())
        assert "Invalid (auth failed)" in page and "rejected by groq/llama (401)" in page
        # The long detail is cut in the cell and whole on hover, so a row stays one line high.
        assert f'title="{LONG_DETAIL[:300]}"' in page
        assert ">" + LONG_DETAIL[:45] + "…<" in page


def test_models_inline_uses_short_column_names_and_narrow_inputs(staff_client, groq):
    page = staff_client.get(reverse("admin:providers_provider_change", args=[groq.pk])).content.decode()

    headers = _column_headers(page, "models")
    assert {"context", "tools", "vision", "json mode", "rpm", "tpd"} <= set(headers)
    assert not any(h.startswith("supports") for h in headers)
    assert re.search(r'name="models-0-rpm"[^>]*style="width: 6em"|style="width: 6em"[^>]*name="models-0-rpm"', page)
    # What does not fit scrolls inside the inline's box instead of widening the whole page.
    assert ".inline-group .tabular.inline-related { overflow-x: auto; }" in page


def test_chain_page_explains_order_and_saves_a_new_order(staff_client, groq):
    chain = FallbackChain.objects.create(name="auto")
    llama, qwen = UpstreamModel.objects.order_by("model_id")
    first = ChainEntry.objects.create(chain=chain, model=llama, position=1)
    second = ChainEntry.objects.create(chain=chain, model=qwen, position=2)
    url = reverse("admin:providers_fallbackchain_change", args=[chain.pk])

    page = staff_client.get(url).content.decode()
    assert "tried from the top down" in page and "drag a row" in page

    # What the drag-and-drop widget posts after dragging qwen above llama.
    response = staff_client.post(url, {
        "name": "auto", "kind": "chat", "strategy": "priority", "description": "", "enabled": "on",
        "entries-TOTAL_FORMS": "2", "entries-INITIAL_FORMS": "2",
        "entries-0-id": first.pk, "entries-0-chain": chain.pk, "entries-0-model": llama.pk, "entries-0-position": "2",
        "entries-1-id": second.pk, "entries-1-chain": chain.pk, "entries-1-model": qwen.pk, "entries-1-position": "1",
    })  # fmt: skip
    assert response.status_code == 302
    assert [e.model.model_id for e in chain.entries.order_by("position")] == ["qwen", "llama"]


def test_new_api_key_is_shown_in_a_box_that_selects_whole(team):
    from django.test import Client

    client = Client()
    client.force_login(team.alice)
    page = client.post(reverse("admin:routing_apikey_add"), {"name": "phone"}, follow=True).content.decode()

    assert re.search(r'<code style="user-select:all[^"]*">fl-[A-Za-z0-9_-]{40,}</code>', page)
    assert "copy it now" in page


def test_request_log_times_are_to_the_second(staff_client):
    created = timezone.make_aware(datetime(2026, 3, 5, 14, 7, 9))
    row = make_log(created_at=created)
    local = timezone.localtime(created)

    listing = staff_client.get(reverse("admin:analytics_requestlog_changelist")).content.decode()
    detail = staff_client.get(reverse("admin:analytics_requestlog_change", args=[row.pk])).content.decode()

    for page in (listing, detail):
        assert f"{local:%Y-%m-%d %H:%M:%S}" in page
    # Today's rows show the time alone, the date on hover.
    make_log(requested_model="mdl-today")
    listing = staff_client.get(reverse("admin:analytics_requestlog_changelist")).content.decode()
    today = listing.split("mdl-today", 1)[0].rsplit("<tr", 1)[1]
    shown = re.search(r'title="(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)">([^<]+)<', today)
    assert shown.group(1) == f"{timezone.localdate():%Y-%m-%d}" and shown.group(3) == shown.group(2)


def test_dashboard_names_a_used_up_window_instead_of_a_red_closed(client, staff_user, groq, settings):
    from routing.config import load_routing_config
    from routing.quota import set_quota_store
    from routing.quota.local import LocalQuotaStore

    model = load_routing_config().by_name["groq/llama"]
    store = LocalQuotaStore()
    # The provider says the minute's requests are used up: the circuit stays closed, the route waits.
    store.record_now(model.route(model.keys[0]), None, headers={
        "x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "40s",
    })  # fmt: skip
    set_quota_store(store)
    try:
        client.force_login(staff_user)
        health = client.get(reverse("admin:analytics_requestlog_dashboard")).content.decode()
    finally:
        set_quota_store(None)

    row = health.split("Route health now", 1)[1].split("<code>groq/llama/main</code>", 1)[1].split("</tr>", 1)[0]
    assert "quota used up" in row and "closed" not in row
    assert "fl-health-open" not in row


def test_test_keys_now_button_on_the_provider_page(staff_client, emulator, team):
    from tests.fixtures_gateway import add_provider

    provider = add_provider(emulator, "groq", ["gsk-good-00000001", "gsk-bad;401"], ["llama"])
    url = reverse("admin:providers_provider_change", args=[provider.pk])
    test_url = reverse("admin:providers_provider_test_keys", args=[provider.pk])
    assert f'action="{test_url}"' in staff_client.get(url).content.decode()

    # Never on a GET (a real upstream call and a status change), and never for a member.
    assert staff_client.get(test_url).status_code == 403 and emulator.calls == []
    from django.test import Client

    member = Client()
    member.force_login(team.alice)
    assert member.post(test_url).status_code == 403 and emulator.calls == []

    response = staff_client.post(test_url, follow=True)

    assert response.redirect_chain[-1][0] == url
    shown = htmllib.unescape(response.content.decode())
    assert "groq/groq-0: OK: groq/llama answered" in shown.replace("Groq/", "groq/")
    assert "groq/groq-1: rejected by groq/llama (401)" in shown.replace("Groq/", "groq/")
    statuses = dict(ProviderKey.objects.values_list("label", "status"))
    assert statuses == {"groq-0": ProviderKey.Status.ACTIVE, "groq-1": ProviderKey.Status.INVALID}
    assert "gsk-bad;401" not in shown and "gsk-good-00000001" not in shown


def test_sticky_sessions_show_switches_with_the_last_reason(staff_client):
    from analytics.models import StickySession

    now = timezone.now()
    reason = "groq/llama-3.3-70b-versatile → gemini/gemini-2.5-flash: rate_limited (all keys cooling down)"
    StickySession.objects.create(key="a" * 64, source="user", provider="gemini", model="gemini-2.5-flash",
                                 switches=2, last_switch_reason=reason, created=now, last_used=now)  # fmt: skip
    StickySession.objects.create(key="b" * 64, source="header", provider="groq", model="llama", created=now,
                                 last_used=now)  # fmt: skip

    page = htmllib.unescape(staff_client.get(reverse("admin:analytics_stickysession_changelist")).content.decode())

    header = page.split('id="result_list"', 1)[1].split("</thead>", 1)[0]
    assert header.count("<th ") == 8  # checkbox + seven: "active" stays on screen
    assert f'title="{reason}"' in page and f"last: {reason[:45]}…" in page


def test_dashboard_without_any_route_says_so(client, staff_user):
    client.force_login(staff_user)
    html = client.get(reverse("admin:analytics_requestlog_dashboard")).content.decode()
    assert "No routes yet" in html and "All 0 routes" not in html


def test_export_yaml_from_the_provider_list_leaves_secrets_out_and_imports_back(staff_client, groq, team):
    import yaml
    from django.test import Client

    from providers.services import config_import

    listing = staff_client.get(reverse("admin:providers_provider_changelist")).content.decode()
    url = reverse("admin:providers_provider_export")
    assert f'href="{url}"' in listing

    response = staff_client.get(url)

    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    assert 'filename="freellm.yaml"' in response["Content-Disposition"]
    text = response.content.decode()
    assert SECRET not in text and "gsk_dead_0000000099" not in text
    data = yaml.safe_load(text)
    assert [k["label"] for k in data["providers"][0]["keys"]] == ["dead", "main"]
    # Importing the export changes nothing and keeps the stored secrets.
    assert config_import(data=data).changes == []
    assert ProviderKey.objects.get(label="main").secret == SECRET

    member = Client()
    member.force_login(team.alice)
    assert member.get(url).status_code == 403


def test_request_log_list_pairs_related_figures_in_eight_columns(staff_client):
    make_log(requested_model="auto", endpoint="chat", stream=True, outcome="exhausted", status_code=429,
             provider="", model="", key_label="")  # fmt: skip

    page = staff_client.get(reverse("admin:analytics_requestlog_changelist")).content.decode()

    header = page.split('id="result_list"', 1)[1].split("</thead>", 1)[0]
    assert re.findall(r'<th scope="col" class="[^"]*column-(\w+)', header) == [
        "when", "user", "request", "route", "outcome_badge", "attempts", "tokens", "latency",
    ]  # fmt: skip
    row = page.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert "auto<br>" in row and "chat · stream" in row
    assert "All routes exhausted<br>" in row and "HTTP 429" in row
