"""Budgets in the admin: staff set a key's and a user's limits; members see their own, read-only."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from routing.models import ApiKey, UserBudget
from routing.services import api_key_create, user_budget_set

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_staff_set_a_keys_budget_and_a_users(team):
    key, _ = api_key_create(user=team.alice, name="laptop")
    staff = client_for(team.staff)
    resp = staff.post(reverse("admin:routing_apikey_change", args=[key.pk]),
                      {"name": "laptop", "rpm": "2", "rpd": "", "tpd": "9000", "allowed_models": "fast, groq/*"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    key.refresh_from_db()
    assert (key.rpm, key.rpd, key.tpd, key.allowed_patterns) == (2, None, 9000, ("fast", "groq/*"))

    resp = staff.post(reverse("admin:routing_userbudget_add"),
                      {"user": team.alice.pk, "rpm": "", "rpd": "100", "tpd": "", "allowed_models": ""})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    assert UserBudget.objects.get(user=team.alice).rpd == 100

    page = staff.get(reverse("admin:routing_apikey_changelist")).content.decode()
    assert "2 rpm · 9,000 tpd · only fast, groq/*" in page


def test_staff_create_a_key_with_a_budget(team):
    client_for(team.staff).post(reverse("admin:routing_apikey_add"),
                                {"name": "ci", "user": team.bob.pk, "rpm": "5", "allowed_models": "fast"})
    key = ApiKey.objects.get(name="ci")
    assert (key.user, key.rpm, key.allowed_patterns) == (team.bob, 5, ("fast",))


def test_members_see_their_limits_read_only(team):
    key, _ = api_key_create(user=team.alice, name="laptop", rpm=3)
    user_budget_set(user=team.alice, rpd=50, allowed_models=["fast"])
    user_budget_set(user=team.bob, rpd=7)
    alice = client_for(team.alice)
    page = alice.get(reverse("admin:routing_apikey_change", args=[key.pk])).content.decode()
    assert "50 rpd · only fast" in page  # the user's budget, shown on the key
    assert 'name="rpm"' not in page  # read-only for members
    # Trying anyway changes nothing.
    alice.post(reverse("admin:routing_apikey_change", args=[key.pk]), {"name": "laptop", "rpm": "1000"})
    key.refresh_from_db()
    assert key.rpm == 3

    listing = alice.get(reverse("admin:routing_userbudget_changelist")).content.decode()
    assert "alice" in listing and ">7<" not in listing
    bobs = UserBudget.objects.get(user=team.bob)
    assert alice.get(reverse("admin:routing_userbudget_change", args=[bobs.pk])).status_code in (302, 403)
    own = UserBudget.objects.get(user=team.alice)
    page = alice.get(reverse("admin:routing_userbudget_change", args=[own.pk])).content.decode()
    assert 'name="rpd"' not in page and "50" in page
    assert alice.post(reverse("admin:routing_userbudget_add"), {"user": team.alice.pk, "rpm": "1"}).status_code == 403
