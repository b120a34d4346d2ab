"""manage.py bootstrap, run by `./dev run` on every start: groups, first admin and key, freellm.yaml."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import override_settings

from providers.models import Provider
from routing.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_admin_password(monkeypatch):
    monkeypatch.delenv("FREELLM_ADMIN_PASSWORD", raising=False)


def bootstrap(config) -> str:
    out = io.StringIO()
    call_command("bootstrap", config=config, stdout=out)
    return out.getvalue()


def test_first_run_creates_admin_key_and_prints_how_to_use_them(tmp_path):
    with override_settings(FREELLM_BIND="127.0.0.1", FREELLM_PORT=8765):
        out = bootstrap(tmp_path / "freellm.yaml")

    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    password = re.search(r"login:\s+admin / (\S+)", out).group(1)
    assert authenticate(username="admin", password=password) == admin
    raw = re.search(r"API key: (fl-\S+)", out).group(1)
    assert ApiKey.objects.get(user=admin).key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert "http://127.0.0.1:8765/admin/" in out
    assert (
        f'curl http://127.0.0.1:8765/v1/chat/completions -H "Authorization: Bearer {raw}" '
        '-H "Content-Type: application/json" -d \'{"model": "auto", "messages": [{"role": "user", "content": "Say hello"}]}\''
    ) in out
    assert "No providers yet" in out


def test_second_run_creates_nothing_and_prints_no_secret(tmp_path):
    first = bootstrap(tmp_path / "freellm.yaml")
    password = re.search(r"login:\s+admin / (\S+)", first).group(1)
    raw = re.search(r"API key: (fl-\S+)", first).group(1)

    second = bootstrap(tmp_path / "freellm.yaml")

    assert get_user_model().objects.count() == 1 and ApiKey.objects.count() == 1
    assert password not in second and raw not in second
    assert "Bearer $FREELLM_API_KEY" in second
    assert f"http://{settings.FREELLM_BIND}:{settings.FREELLM_PORT}/admin/" in second


def test_admin_password_from_the_environment_is_used_and_not_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("FREELLM_ADMIN_PASSWORD", "correct horse battery staple")

    out = bootstrap(tmp_path / "freellm.yaml")

    assert authenticate(username="admin", password="correct horse battery staple") is not None
    assert "correct horse battery staple" not in out
    assert "FREELLM_ADMIN_PASSWORD" in out


def test_an_existing_superuser_means_no_new_admin(tmp_path):
    get_user_model().objects.create_superuser(username="root", password=None)

    out = bootstrap(tmp_path / "freellm.yaml")

    assert not get_user_model().objects.filter(username="admin").exists()
    assert "login:" not in out and not ApiKey.objects.exists()


def test_groups_get_the_right_permissions_every_run(tmp_path):
    bootstrap(tmp_path / "freellm.yaml")
    bootstrap(tmp_path / "freellm.yaml")

    staff = set(Group.objects.get(name="Staff").permissions.values_list("content_type__app_label", "codename"))
    members = set(Group.objects.get(name="Members").permissions.values_list("content_type__app_label", "codename"))
    assert {
        ("providers", "change_providerkey"),
        ("providers", "add_fallbackchain"),
        ("routing", "manage_all_api_keys"),
        ("analytics", "view_requestlog"),
    } <= staff
    # Members see their own user budget (read-only), nothing of anyone else's.
    assert members == {("routing", "view_apikey"), ("routing", "add_apikey"), ("routing", "change_apikey"),
                       ("routing", "view_userbudget")}


def test_freellm_yaml_is_imported_when_present(tmp_path, write_config):
    path = write_config(
        {"providers": [{"name": "groq", "base_url": "https://api.groq.com/openai/v1",
                        "keys": [{"label": "a", "secret": "gsk_aaaaaaaaaaaa"}], "models": [{"id": "llama"}]}],
         "chains": [{"name": "auto", "models": ["groq/llama"]}]},
        name="freellm.yaml",
    )

    first = bootstrap(path)
    second = bootstrap(path)

    assert "+ provider groq" in first and "freellm.yaml: 4 change(s)" in first
    assert "freellm.yaml: no change(s)" in second
    assert Provider.objects.get().keys.get().secret == "gsk_aaaaaaaaaaaa"


def test_a_broken_freellm_yaml_stops_the_start_with_its_problems(tmp_path, write_config):
    path = write_config({"providers": [{"name": "groq"}]}, name="freellm.yaml")

    with pytest.raises(CommandError, match=r"providers\[0\]\.base_url: is required"):
        bootstrap(path)
    assert not Provider.objects.exists()


def test_default_config_path_is_the_project_root():
    from routing.management.commands.bootstrap import Command

    parser = Command().create_parser("manage.py", "bootstrap")

    assert parser.parse_args([]).config == settings.BASE_DIR / "freellm.yaml"
