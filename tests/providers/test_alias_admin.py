"""Aliases in the admin: listed in matching order, reorderable, a target that names nothing is refused."""

from __future__ import annotations

import pytest
from django.urls import reverse

from providers.models import FallbackChain, ModelAlias, Provider, UpstreamModel


@pytest.fixture
def superuser_client(client, django_user_model, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # no in-process quota rollup on page views
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def targets(db) -> None:
    FallbackChain.objects.create(name="coding")
    mistral = Provider.objects.create(slug="mistral", name="Mistral", base_url="https://api.mistral.ai/v1")
    UpstreamModel.objects.create(provider=mistral, model_id="codestral-latest")


def test_an_alias_is_added_for_an_existing_target_and_refused_for_an_unknown_one(superuser_client, targets):
    url = reverse("admin:providers_modelalias_add")

    refused = superuser_client.post(url, {"pattern": "claude-*", "target": "nowhere", "enabled": "on"})
    assert refused.status_code == 200
    assert "is neither a chain nor a provider/model route" in refused.content.decode()
    assert not ModelAlias.objects.exists()

    for pattern, target in (("claude-*", "coding"), ("codex-*", "mistral/codestral-latest")):
        added = superuser_client.post(url, {"pattern": pattern, "target": target, "enabled": "on"})
        assert added.status_code == 302, added.content.decode()[:2000]
    assert [str(a) for a in ModelAlias.objects.all()] == ["claude-* → coding", "codex-* → mistral/codestral-latest"]


def test_the_list_shows_aliases_in_matching_order(superuser_client, targets):
    ModelAlias.objects.create(pattern="z-*", target="coding", position=1)
    ModelAlias.objects.create(pattern="a-*", target="coding", position=2)

    page = superuser_client.get(reverse("admin:providers_modelalias_changelist")).content.decode()

    assert page.index("z-*") < page.index("a-*")



def test_dragging_reorders_and_the_routers_see_the_new_order(client, django_user_model, targets):
    from asgiref.sync import async_to_sync

    from routing.config import current_config_version, load_routing_config

    shared_version = async_to_sync(current_config_version)

    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    first = ModelAlias.objects.create(pattern="a-*", target="coding", position=1)
    second = ModelAlias.objects.create(pattern="b-*", target="coding", position=2)
    version = shared_version()

    resp = client.post(reverse("admin:providers_modelalias_sortable_update"),
                       data={"updatedItems": [[second.pk, 1], [first.pk, 2]]}, content_type="application/json")

    assert resp.status_code == 200, resp.content
    assert [a.pattern for a in load_routing_config("t").aliases] == ["b-*", "a-*"]
    # bulk_update sends no signal: the admin announces the change itself, or routers would keep the old order.
    assert shared_version() != version
