"""The request log in the admin: read-only list and detail, bounded counting, filters, who sees what."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.admin import CappedCountPaginator
from analytics.models import RequestLog
from tests.fixtures_analytics import make_log

CHANGELIST = "/admin/analytics/requestlog/"

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    """Result rows of the changelist table."""
    body = html.split('id="result_list"', 1)[1].split("</table>", 1)[0]
    return body.count("<tr") - 1  # minus the header row


def test_changelist_shows_rows_with_route_outcome_and_figures(client, staff_user):
    make_log(requested_model="smart", provider="cerebras", model="llama-3.3-70b", key_label="cb-main",
             prompt_tokens=123, completion_tokens=45, latency_ms=812, attempts=2, status_code=200)
    make_log(provider="", model="", key_label="", outcome=RequestLog.Outcome.EXHAUSTED, status_code=429, attempts=3)
    client.force_login(staff_user)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert _rows(html) == 2
    assert "cerebras/llama-3.3-70b · cb-main" in html
    assert "123 + 45" in html and "812 ms" in html
    assert "All routes exhausted" in html
    # Read-only: no add button, no bulk actions.
    assert "requestlog/add/" not in html and 'name="action"' not in html


def test_detail_page_shows_the_trail_step_by_step(client, staff_user):
    row = make_log(
        attempts=2,
        trail=[
            {"route": "groq/llama-3.3-70b/groq-0", "outcome": "skipped:rpm", "ms": 0},
            {"route": "gemini/gemini-2.0-flash/g-1", "outcome": "rate_limited", "ms": 120},
            {"route": "openrouter/meta-llama/llama-3.3-70b:free/-", "outcome": "ok", "ms": 950},
        ],
    )
    client.force_login(staff_user)

    html = client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()

    assert "freellm-trail" in html
    table = html.split("freellm-trail", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 4  # header + 3 steps
    assert "skipped: rpm" in table
    assert "rate_limited" in table and "120 ms" in table
    assert "openrouter/meta-llama/llama-3.3-70b:free/-" in table
    # Nothing to save or delete on a log row.
    assert 'name="_save"' not in html and "deletelink" not in html


def test_paginator_never_counts_the_whole_table(client, staff_user, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 5)
    now = timezone.now()
    for i in range(8):
        make_log(created_at=now - timedelta(minutes=i))
    client.force_login(staff_user)

    with CaptureQueriesContext(connection) as queries:
        html = client.get(CHANGELIST).content.decode()

    log_table = connection.ops.quote_name(RequestLog._meta.db_table)
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and log_table in q["sql"]]
    assert counts, "the changelist should count (boundedly)"
    for sql in counts:
        assert re.search(r"\bLIMIT\b", sql, re.IGNORECASE), f"unbounded count: {sql}"
    assert "5+ request logs" in " ".join(html.split())


def test_capped_paginator_counts_exactly_below_the_cap(db):
    for _ in range(3):
        make_log()
    paginator = CappedCountPaginator(RequestLog.objects.order_by("-created_at"), 2)
    assert paginator.count == 3 and not paginator.capped and paginator.num_pages == 2


def test_filters_by_outcome_provider_endpoint_and_date(client, staff_user):
    from providers.models import Provider

    Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    Provider.objects.create(slug="gemini", name="Gemini", base_url="http://127.0.0.1:9/v1")
    old = timezone.now() - timedelta(days=40)
    make_log(provider="groq", requested_model="mdl-groq-ok")
    make_log(provider="gemini", requested_model="mdl-gemini-ok")
    make_log(provider="", outcome=RequestLog.Outcome.EXHAUSTED, status_code=429, requested_model="mdl-exhausted")
    make_log(provider="groq", endpoint="embedding", requested_model="mdl-embedding")
    make_log(provider="groq", created_at=old, requested_model="mdl-old")
    client.force_login(staff_user)

    def shown(query: str) -> set[str]:
        html = client.get(CHANGELIST + query).content.decode()
        body = html.split('id="result_list"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
        return set(re.findall(r">(mdl-[a-z-]+)<", body))

    assert shown("?outcome__exact=exhausted") == {"mdl-exhausted"}
    assert shown("?provider=gemini") == {"mdl-gemini-ok"}
    assert shown("?provider=-") == {"mdl-exhausted"}
    assert shown("?endpoint=embedding") == {"mdl-embedding"}
    past_week = re.search(r'href="(\?created_at__gte=[^"]+)">Past 7 days', client.get(CHANGELIST).content.decode())
    assert shown(past_week.group(1).replace("&amp;", "&")) == {"mdl-groq-ok", "mdl-gemini-ok", "mdl-exhausted", "mdl-embedding"}
    assert shown("?q=mdl-gemini") == {"mdl-gemini-ok"}
    # The provider filter offers the configured providers (not a DISTINCT over the log).
    html = client.get(CHANGELIST).content.decode()
    assert "?provider=groq" in html and "?provider=gemini" in html


def test_member_sees_only_their_own_requests(client, staff_user, member_user):
    mine = make_log(user=member_user, requested_model="mdl-mine")
    theirs = make_log(user=staff_user, requested_model="mdl-theirs")
    client.force_login(member_user)

    html = client.get(CHANGELIST).content.decode()
    assert "mdl-mine" in html and "mdl-theirs" not in html
    assert client.get(f"{CHANGELIST}{mine.pk}/change/").status_code == 200
    # Someone else's row is "not found" for them (redirect back with a message), never displayed.
    other = client.get(f"{CHANGELIST}{theirs.pk}/change/", follow=True)
    assert "mdl-theirs" not in other.content.decode()
    # No user filter for a member (it would list the team).
    assert "?user__id__exact" not in html


def test_staff_see_everyone_and_can_filter_by_user(client, staff_user, member_user):
    make_log(user=member_user, requested_model="mdl-mine")
    make_log(user=staff_user, requested_model="mdl-theirs")
    client.force_login(staff_user)

    html = client.get(CHANGELIST).content.decode()
    assert "mdl-mine" in html and "mdl-theirs" in html
    filtered = client.get(f"{CHANGELIST}?user__id__exact={member_user.pk}").content.decode()
    assert "mdl-mine" in filtered and "mdl-theirs" not in filtered


def test_team_member_without_view_permission_is_refused(client, django_user_model, team_groups):
    plain = django_user_model.objects.create_user("pat", password="pw", is_staff=True)
    plain.groups.add(team_groups["Members"])
    make_log(user=plain)
    client.force_login(plain)

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(CHANGELIST + "dashboard/").status_code == 403
    assert client.get(CHANGELIST + "live/").status_code == 403


def test_secrets_are_never_displayed(client, staff_user):
    from providers.models import Provider, ProviderKey
    from routing.models import ApiKey
    from routing.services import api_key_create

    provider = Provider.objects.create(slug="groq", name="Groq", base_url="http://127.0.0.1:9/v1")
    provider_secret = "gsk_live_0123456789abcdefSECRET"
    ProviderKey.objects.create(provider=provider, label="groq-main", secret=provider_secret)
    api_key, raw = api_key_create(user=staff_user, name="laptop")
    row = make_log(user=staff_user, api_key=api_key, provider="groq", key_label="groq-main",
                   trail=[{"route": "groq/llama-3.3-70b/groq-main", "outcome": "ok", "ms": 10}])
    client.force_login(staff_user)

    pages = [
        client.get(CHANGELIST).content.decode(),
        client.get(f"{CHANGELIST}{row.pk}/change/").content.decode(),
        client.get(CHANGELIST + "dashboard/?period=24h").content.decode(),
        client.get(CHANGELIST + "live/").content.decode(),
    ]
    key_hash = ApiKey.objects.get(pk=api_key.pk).key_hash
    for html in pages:
        assert provider_secret not in html
        assert raw not in html and raw[len(api_key.prefix):] not in html
        assert key_hash not in html
    # The key is recognisable by its label and visible prefix only.
    assert "groq-main" in pages[1] and api_key.prefix in pages[1]


def test_admin_index_links_the_dashboard_and_live_feed(client, staff_user, member_user):
    client.force_login(staff_user)
    html = client.get("/admin/").content.decode()
    assert CHANGELIST + "dashboard/" in html and CHANGELIST + "live/" in html

    client.force_login(member_user)
    html = client.get("/admin/").content.decode()
    assert CHANGELIST + "dashboard/" in html and CHANGELIST + "live/" not in html
