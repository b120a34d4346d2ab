"""manage.py export_config: the import format, lossless round trip, secrets only on request."""

from __future__ import annotations

import io
import stat

import pytest
import yaml
from django.core.management import call_command

from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel

pytestmark = pytest.mark.django_db

SECRETS = ("gsk_aaaaaaaaaaaaaaaa", "sk-or-oooooooooooo")


@pytest.fixture
def populated() -> None:
    """Every field the format knows, set to something other than its default (entered as in the admin)."""
    groq = Provider.objects.create(slug="groq", name="groq", base_url="https://api.groq.com/openai/v1")
    ProviderKey.objects.create(provider=groq, label="groq-a", secret=SECRETS[0])
    ProviderKey.objects.create(provider=groq, label="keyless-slot", secret="", enabled=False)
    llama = UpstreamModel.objects.create(
        provider=groq, model_id="llama-3.3-70b-versatile", family="llama-3.3", context_window=131072,
        supports_tools=True, rpm=30, rpd=1000, tpm=12000, tpd=100000,
    )
    router = Provider.objects.create(
        slug="openrouter", name="OpenRouter", base_url="https://openrouter.ai/api/v1", enabled=False,
        headers={"HTTP-Referer": "https://freellm.local"}, drop_params=["seed"], keyless=True,
        account_rpm=20, account_rpd=0, daily_reset_tz="America/Los_Angeles",
    )
    ProviderKey.objects.create(provider=router, label="or", secret=SECRETS[1])
    free = UpstreamModel.objects.create(
        provider=router, model_id="meta-llama/llama-3.3-70b-instruct:free", supports_vision=True,
        supports_json=True, enabled=False, rpd=50,
    )
    embed = UpstreamModel.objects.create(
        provider=router, model_id="nomic-embed", kind="embedding", family="nomic-v1.5", dimensions=768
    )
    auto = FallbackChain.objects.create(name="auto", description="default chat", kind="chat")
    ChainEntry.objects.create(chain=auto, model=free, position=1)
    ChainEntry.objects.create(chain=auto, model=llama, position=2)
    emb = FallbackChain.objects.create(name="embed", kind="embedding", enabled=False)
    ChainEntry.objects.create(chain=emb, model=embed, position=1)


def export(*args) -> str:
    out = io.StringIO()
    call_command("export_config", *args, stdout=out)
    return out.getvalue()


def import_(path, *args) -> str:
    out = io.StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


def wipe() -> None:
    FallbackChain.objects.all().delete()
    Provider.objects.all().delete()


def test_export_is_the_import_format(populated):
    data = yaml.safe_load(export())

    groq = next(p for p in data["providers"] if p["name"] == "groq")
    assert groq["adapter"] == "openai" and groq["base_url"] == "https://api.groq.com/openai/v1"
    assert groq["models"][0] == {
        "id": "llama-3.3-70b-versatile", "kind": "chat", "family": "llama-3.3", "context_window": 131072,
        "tools": True, "limits": {"rpm": 30, "rpd": 1000, "tpm": 12000, "tpd": 100000},
    }
    assert data["chains"][0] == {
        "name": "auto", "kind": "chat", "description": "default chat",
        "models": ["openrouter/meta-llama/llama-3.3-70b-instruct:free", "groq/llama-3.3-70b-versatile"],
    }


def test_secrets_are_left_out_unless_asked_for(populated):
    plain = export()
    assert not any(secret in plain for secret in SECRETS)
    assert yaml.safe_load(plain)["providers"][0]["keys"] == [
        {"label": "groq-a"},
        {"label": "keyless-slot", "secret": "", "enabled": False},  # nothing to hide
    ]

    with_secrets = export("--with-secrets")
    assert all(secret in with_secrets for secret in SECRETS)


def test_export_import_round_trip_into_an_empty_database_is_lossless(populated, write_config):
    first = export("--with-secrets")
    path = write_config(first)
    wipe()

    import_(path)

    assert export("--with-secrets") == first
    assert ProviderKey.objects.get(label="groq-a").secret == SECRETS[0]


def test_reimporting_an_export_changes_nothing(populated, write_config):
    before = export("--with-secrets")

    out = import_(write_config(export()))

    assert "nothing to change" in out
    assert export("--with-secrets") == before


def test_export_to_file_with_secrets_is_private(populated, tmp_path):
    path = tmp_path / "backup.yaml"
    call_command("export_config", "--with-secrets", "-o", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRETS[0] in path.read_text()
