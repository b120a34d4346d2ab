"""The config file's `users:` section: budgets round-trip through export_config/import_config, idempotent,
with nothing secret in the file."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from routing.models import ApiKey, UserBudget
from routing.services import api_key_create, user_budget_set

pytestmark = pytest.mark.django_db


def export() -> str:
    out = io.StringIO()
    call_command("export_config", stdout=out)
    return out.getvalue()


def import_(path, *args) -> str:
    out = io.StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def budgets(team):
    ci, ci_raw = api_key_create(user=team.alice, name="ci", rpm=2, allowed_models=["fast"])
    twin_a, _ = api_key_create(user=team.alice, name="twin", tpd=1000)
    twin_b, _ = api_key_create(user=team.alice, name="twin", rpd=5)
    api_key_create(user=team.alice, name="plain")
    user_budget_set(user=team.alice, rpd=100, tpd=50_000, allowed_models=["fast", "groq/*"])
    user_budget_set(user=team.bob, rpm=1)
    return {"ci": ci, "ci_raw": ci_raw, "twin_a": twin_a, "twin_b": twin_b}


def test_export_lists_budgets_and_no_secret(budgets):
    text = export()
    data = yaml.safe_load(text)
    alice = next(u for u in data["users"] if u["username"] == "alice")
    assert alice["limits"] == {"rpd": 100, "tpd": 50000} and alice["models"] == ["fast", "groq/*"]
    assert alice["api_keys"] == [
        {"name": "ci", "limits": {"rpm": 2}, "models": ["fast"]},
        {"name": "twin", "prefix": budgets["twin_a"].prefix, "limits": {"tpd": 1000}},
        {"name": "twin", "prefix": budgets["twin_b"].prefix, "limits": {"rpd": 5}},
    ]
    assert {"username": "bob", "limits": {"rpm": 1}} in data["users"]
    assert "sam" not in text  # no budget, nothing to say
    assert budgets["ci_raw"] not in text
    assert not any(k.key_hash in text for k in ApiKey.objects.all())


def test_round_trip_and_reimport_changes_nothing(budgets, write_config):
    before = export()
    path = write_config(before)
    assert "nothing to change" in import_(path)
    # Cleared in the database, restored by the file.
    UserBudget.objects.all().delete()
    ApiKey.objects.update(rpm=None, rpd=None, tpd=None, allowed_models="")
    out = import_(path)
    assert "+ budget of user alice" in out and "~ budget of key alice/ci" in out
    assert export() == before
    assert "nothing to change" in import_(path)


def test_import_sets_changes_and_prunes(budgets, write_config):
    path = write_config({"users": [{"username": "alice", "limits": {"rpm": 9},
                                    "api_keys": [{"name": "ci", "models": ["smart"]}]}]})
    out = import_(path, "--prune")
    assert "~ budget of user alice: rpm, rpd, tpd, allowed_models" in out
    assert "- budget of user bob" in out
    alice = UserBudget.objects.get(user__username="alice")
    assert (alice.rpm, alice.rpd, alice.allowed_patterns) == (9, None, ())
    ci = ApiKey.objects.get(pk=budgets["ci"].pk)
    assert (ci.rpm, ci.allowed_patterns) == (None, ("smart",))
    assert not ApiKey.objects.get(pk=budgets["twin_a"].pk).has_budget
    assert not UserBudget.objects.filter(user__username="bob").exists()


def test_bad_users_sections_are_refused_whole(budgets, write_config):
    path = write_config({"users": [
        {"username": "alice", "limits": {"rpm": -1}},
        {"username": "nobody"},
        {"username": "bob", "limits": {"rpd": 3}, "color": "red"},
    ]})
    with pytest.raises(CommandError) as caught:
        import_(path)
    text = str(caught.value)
    assert "users[0].limits.rpm: must be a non-negative integer" in text
    assert "users[2].color: unknown field (allowed: username, limits, models, api_keys)" in text

    path = write_config({"users": [{"username": "nobody"}, {"username": "bob", "limits": {"rpd": 3}},
                                   {"username": "alice", "api_keys": [{"name": "twin"}, {"name": "gone"}]}]})
    with pytest.raises(CommandError) as caught:
        import_(path)
    text = str(caught.value)
    assert "users[0].username: no user named 'nobody'" in text
    assert "users[2].api_keys[0]: alice has 2 active keys named 'twin'; add `prefix` to say which" in text
    assert "users[2].api_keys[1]: alice has no active API key named 'gone'" in text
    assert UserBudget.objects.get(user__username="bob").rpd is None  # all or nothing


def test_unknown_top_level_field_names_the_users_section(write_config, db):
    with pytest.raises(CommandError) as caught:
        import_(write_config({"userz": []}))
    assert "userz: unknown field (allowed: providers, chains, aliases, users)" in str(caught.value)
