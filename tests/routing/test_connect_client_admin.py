"""The admin's *Connect a client* page (server side; the browser suite clicks through it in tests/browser/)."""

from __future__ import annotations

from html import unescape

import pytest
from django.urls import reverse

URL = "/admin/routing/apikey/connect/"


@pytest.fixture
def people(team):
    """The team fixture's staff user and two members, each with a key; raw keys kept to prove they never show."""
    from routing.services import api_key_create

    made = {}
    for name, user in (("sam", team.staff), ("alice", team.alice), ("bob", team.bob)):
        key, raw = api_key_create(user=user, name=f"{name}-laptop")
        made[name] = (user, key, raw)
    return made


def page(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(URL, params)
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_the_url_is_named():
    assert reverse("admin:routing_apikey_connect") == URL


def test_a_member_sees_only_their_own_keys_and_never_a_full_key(client, people):
    alice, alice_key, alice_raw = people["alice"]
    _, bob_key, bob_raw = people["bob"]
    html = page(client, alice)
    assert f"{alice_key.prefix}… (alice-laptop)" in html
    assert bob_key.prefix not in html
    assert alice_raw not in html and bob_raw not in html
    # The default tool, with the placeholder naming the chosen key.
    assert f"export ANTHROPIC_AUTH_TOKEN={alice_key.prefix}..." in html
    assert f"Replace {alice_key.prefix}... with the full key" in html


def test_another_members_key_cannot_be_chosen(client, people):
    alice, alice_key, _ = people["alice"]
    _, bob_key, _ = people["bob"]
    html = page(client, alice, agent="codex", key=bob_key.prefix)
    assert "That is not one of your active keys." in html
    assert bob_key.prefix not in html  # not even echoed back
    # The rest of the choice still counts.
    assert 'wire_api = "responses"' in html


def test_staff_too_see_only_their_own_keys_here(client, people):
    sam, sam_key, _ = people["sam"]
    html = page(client, sam)
    assert sam_key.prefix in html
    assert people["alice"][1].prefix not in html and people["bob"][1].prefix not in html


def test_each_tool_and_model_choice_shows_its_snippet(client, people, settings):
    from providers.models import FallbackChain

    FallbackChain.objects.create(name="coding")
    settings.FREELLM_PUBLIC_URL = "https://llm.example.com"
    alice, alice_key, _ = people["alice"]
    html = page(client, alice, agent="zed", key=alice_key.prefix, model="coding")
    assert '"api_url": "https://llm.example.com"' in html
    assert '"model": "coding:latest"' in html
    assert '<option value="coding" selected>coding</option>' in html
    html = page(client, alice, agent="openai-sdk", key=alice_key.prefix, model="coding")
    assert f'OpenAI(base_url="https://llm.example.com/v1", api_key="{alice_key.prefix}...")' in html


def test_without_a_key_the_page_says_how_to_get_one(client, team):
    html = page(client, team.alice)  # the team fixture's members own no key yet
    assert "create a key" in html and reverse("admin:routing_apikey_add") in html
    assert "export ANTHROPIC_AUTH_TOKEN=fl-..." in html


def test_someone_who_may_not_see_keys_is_refused(client, db, django_user_model):
    outsider = django_user_model.objects.create_user("olga", is_staff=True)  # admin login, no group
    client.force_login(outsider)
    assert client.get(URL).status_code == 403


def test_linked_from_the_index_the_user_links_and_the_key_list(client, people):
    alice = people["alice"][0]
    client.force_login(alice)
    for where in ("/admin/", "/admin/routing/apikey/"):
        html = client.get(where).content.decode()
        assert html.count(f'href="{URL}"') >= 2, where  # user links, and the index panel or the object tool


def test_a_new_key_for_the_tool_is_filled_in_this_once(client, people):
    import re

    from django.contrib.admin.models import ADDITION, LogEntry

    from routing.models import hash_api_key

    alice = people["alice"][0]
    client.force_login(alice)
    response = client.post(URL, {"agent": "codex", "model": "auto"})
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    html = unescape(response.content.decode())
    new = alice.api_keys.get(name="OpenAI Codex CLI")
    (raw,) = re.findall(r"export FREELLM_API_KEY=(fl-[\w-]+)", html)
    assert hash_api_key(raw) == new.key_hash
    assert f"New API key 'OpenAI Codex CLI' ({new.prefix}…)" in html and "Replace" not in html
    assert f'<option value="{new.prefix}" selected>' in html
    assert LogEntry.objects.filter(object_id=str(new.pk), action_flag=ADDITION, user=alice).exists()
    # Never again.
    assert raw not in page(client, alice, agent="codex", key=new.prefix)


def test_no_new_key_without_the_permission_to_add_keys(client, db, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    html = page(client, viewer)
    assert "New key for" not in html
    assert client.post(URL, {"agent": "codex", "model": "auto"}).status_code == 403
    assert not viewer.api_keys.exists()
