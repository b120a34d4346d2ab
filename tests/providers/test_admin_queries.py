"""No N+1 queries on the heavy admin pages: each page is measured with a couple of rows, then must render
many more rows within that same number of queries (or, for a chain, one more per entry at most)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.models import StickySession
from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel
from routing.models import QuotaWindow
from routing.quota.local import LocalQuotaStore
from routing.services import api_key_create
from tests.fixtures_analytics import make_log

MORE = 25


@pytest.fixture
def staff_client(client, staff_user, settings):
    """Staff logged in. The quota state is an in-process store, but REDIS_URL is set (to nothing that
    listens) so pages read the snapshot rather than the live state: the query count is the page's own."""
    from routing.quota import set_quota_store

    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    set_quota_store(LocalQuotaStore(lease_ttl=60))
    client.force_login(staff_user)
    yield client
    set_quota_store(None)


def add_providers(start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        provider = Provider.objects.create(slug=f"p{i}", name=f"P{i}", base_url="http://127.0.0.1:9/v1")
        model = UpstreamModel.objects.create(provider=provider, model_id=f"m{i}", rpm=30)
        UpstreamModel.objects.create(provider=provider, model_id=f"e{i}", kind="embedding", family=f"f{i}")
        for k in range(2):
            key = ProviderKey.objects.create(provider=provider, label=f"k{k}", secret=f"secret-{i}-{k}-xxxx")
            QuotaWindow.objects.create(provider=provider.slug, model=model.model_id, key_label=key.label,
                                       window="rpm", used=3, limit=30, configured_limit=30, health="open",
                                       cooldown_until=now + timedelta(minutes=1), updated_at=now)  # fmt: skip
        chain = FallbackChain.objects.create(name=f"chain{i}")
        ChainEntry.objects.create(chain=chain, model=model, position=0)


def add_traffic(user, start: int, count: int) -> None:
    now = timezone.now()
    for i in range(start, start + count):
        api_key, _ = api_key_create(user=user, name=f"key{i}")
        make_log(user=user, api_key=api_key, provider=f"p{i}", key_label="k0")
        StickySession.objects.create(key=f"session-{i}", source="user", api_key=api_key, provider=f"p{i}",
                                     model=f"m{i}", created=now, last_used=now)  # fmt: skip


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


# Each page, and what only shows once the extra rows are there (else the test would prove nothing).
CHANGELISTS = [
    ("admin:providers_provider_changelist", ">p20<"),
    ("admin:providers_providerkey_changelist", "p20/k1"),
    ("admin:providers_upstreammodel_changelist", "p20/e20"),
    ("admin:providers_fallbackchain_changelist", "chain20"),
    ("admin:routing_quotawindow_changelist", "p20/m20/k1"),
    ("admin:routing_apikey_changelist", "key20"),
    ("admin:analytics_requestlog_changelist", "p20/llama-3.3-70b"),
    ("admin:analytics_stickysession_changelist", "p20/m20"),
    ("admin:analytics_requestlog_dashboard", ">p20<"),
]


@pytest.mark.parametrize(("view", "extra_row"), CHANGELISTS)
def test_changelists_do_not_query_per_row(staff_client, staff_user, view, extra_row, django_assert_max_num_queries):
    url = reverse(view)
    add_providers(0, 2)
    add_traffic(staff_user, 0, 2)
    few = count_queries(staff_client, url)

    add_providers(2, MORE)
    add_traffic(staff_user, 2, MORE)
    with django_assert_max_num_queries(few):
        html = staff_client.get(url).content.decode()
    assert extra_row in html


def test_provider_page_does_not_query_per_key_or_model(staff_client, django_assert_max_num_queries):
    add_providers(0, 1)
    provider = Provider.objects.get(slug="p0")
    url = reverse("admin:providers_provider_change", args=[provider.pk])
    few = count_queries(staff_client, url)

    for k in range(2, 2 + MORE):
        ProviderKey.objects.create(provider=provider, label=f"k{k}", secret=f"secret-0-{k}-xxxx")
        UpstreamModel.objects.create(provider=provider, model_id=f"extra-{k}")
    with django_assert_max_num_queries(few):
        html = staff_client.get(url).content.decode()
    assert f"k{MORE + 1}" in html and f"extra-{MORE + 1}" in html


def test_chain_page_needs_at_most_one_query_per_entry(staff_client, django_assert_max_num_queries):
    """The model picker (autocomplete) looks up each row's chosen model: one query per entry, no more."""
    add_providers(0, 2)
    chain = FallbackChain.objects.get(name="chain0")
    url = reverse("admin:providers_fallbackchain_change", args=[chain.pk])
    few = count_queries(staff_client, url)

    add_providers(2, MORE)
    for position, model in enumerate(UpstreamModel.objects.filter(kind="chat").exclude(provider__slug="p0"), 1):
        ChainEntry.objects.create(chain=chain, model=model, position=position)
    assert chain.entries.count() == MORE + 2
    with django_assert_max_num_queries(few + MORE + 1):
        html = staff_client.get(url).content.decode()
    assert f"p{MORE}/m{MORE}" in html


def test_chain_model_picker_does_not_query_per_model(staff_client, django_assert_max_num_queries):
    url = reverse("admin:autocomplete") + "?app_label=providers&model_name=chainentry&field_name=model&term="
    add_providers(0, 2)
    few = count_queries(staff_client, url)

    add_providers(2, 8)  # the picker shows 20 models a page
    with django_assert_max_num_queries(few):
        results = staff_client.get(url).json()["results"]
    assert len(results) == 20 and results[0]["text"] == "p0/e0"
