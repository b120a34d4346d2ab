"""manage.py import_config: idempotent upsert, all-or-nothing, clear errors, dry run, prune, secrets."""

from __future__ import annotations

import copy
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from providers.crypto import generate_key_spec
from providers.models import ChainEntry, FallbackChain, Provider, ProviderKey, UpstreamModel
from providers.services import config_export

pytestmark = pytest.mark.django_db

CONFIG = {
    "providers": [
        {
            "name": "groq",
            "adapter": "openai",
            "base_url": "https://api.groq.com/openai/v1",
            "headers": {},
            "keys": [
                {"label": "groq-a", "secret_env": "GROQ_KEY_A"},
                {"label": "groq-b", "secret": "gsk_bbbbbbbbbbbbbbbb"},
            ],
            "models": [
                {
                    "id": "llama-3.3-70b-versatile",
                    "kind": "chat",
                    "family": "llama-3.3",
                    "context_window": 131072,
                    "tools": True,
                    "limits": {"rpm": 30, "rpd": 1000, "tpm": 12000, "tpd": 100000},
                },
                {"id": "llama-3.1-8b-instant", "kind": "chat", "limits": {"rpm": 30}},
            ],
        },
        {
            "name": "gemini",
            "adapter": "gemini",
            "base_url": "https://generativelanguage.googleapis.com/v1beta",
            "keys": [{"label": "g1", "secret": "AIza-gggggggggggggggg"}],
            "models": [
                {"id": "gemini-2.5-flash", "vision": True, "json": True},
                {"id": "text-embedding-004", "kind": "embedding", "family": "gecko", "dimensions": 768},
            ],
        },
    ],
    "chains": [
        {"name": "auto", "kind": "chat", "models": ["groq/llama-3.3-70b-versatile", "gemini/gemini-2.5-flash"]},
    ],
}


@pytest.fixture(autouse=True)
def groq_key_env(monkeypatch):
    monkeypatch.setenv("GROQ_KEY_A", "gsk_aaaaaaaaaaaaaaaa")


def run(path, *args) -> str:
    out = io.StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    """Everything the config describes, secrets included, to prove 'nothing changed'."""
    return config_export(with_secrets=True)


def test_import_creates_everything_as_described(write_config):
    out = run(write_config(CONFIG))

    assert "+ provider groq" in out and "+ chain auto" in out
    groq = Provider.objects.get(slug="groq")
    assert groq.adapter == "openai" and groq.name == "groq"
    assert {k.label: k.secret for k in groq.keys.all()} == {"groq-a": "gsk_aaaaaaaaaaaaaaaa", "groq-b": "gsk_bbbbbbbbbbbbbbbb"}
    llama = UpstreamModel.objects.get(provider=groq, model_id="llama-3.3-70b-versatile")
    assert (llama.rpm, llama.rpd, llama.tpm, llama.tpd) == (30, 1000, 12000, 100000)
    assert llama.supports_tools and llama.context_window == 131072 and llama.family == "llama-3.3"
    small = UpstreamModel.objects.get(provider=groq, model_id="llama-3.1-8b-instant")
    assert (small.rpd, small.tpm, small.context_window) == (None, None, None)  # omitted = unknown
    flash = UpstreamModel.objects.get(model_id="gemini-2.5-flash")
    assert flash.supports_vision and flash.supports_json and not flash.supports_tools
    assert UpstreamModel.objects.get(model_id="text-embedding-004").dimensions == 768
    chain = FallbackChain.objects.get(name="auto")
    assert [e.model.route_name for e in chain.entries.order_by("position")] == [
        "groq/llama-3.3-70b-versatile",
        "gemini/gemini-2.5-flash",
    ]


def test_import_is_idempotent(write_config):
    path = write_config(CONFIG)
    run(path)
    before = snapshot()
    entry_ids = list(ChainEntry.objects.values_list("pk", flat=True))

    out = run(path)

    assert "already up to date, nothing to change" in out
    assert snapshot() == before
    # Unchanged chains keep their entry rows (no delete-and-recreate churn).
    assert list(ChainEntry.objects.values_list("pk", flat=True)) == entry_ids


def test_reimport_updates_only_what_changed(write_config, monkeypatch):
    run(write_config(CONFIG))
    changed = copy.deepcopy(CONFIG)
    changed["providers"][0]["models"][0]["limits"]["rpm"] = 60
    changed["chains"][0]["models"].reverse()
    monkeypatch.setenv("GROQ_KEY_A", "gsk_rotated_aaaaaaaaa")

    out = run(write_config(changed))

    lines = out.strip().splitlines()
    assert "~ model groq/llama-3.3-70b-versatile: rpm" in lines
    assert "~ key groq/groq-a: secret" in lines
    assert "~ chain auto: models → gemini/gemini-2.5-flash, groq/llama-3.3-70b-versatile" in lines
    assert len(lines) == 4  # the three changes and the summary
    assert "gsk_rotated" not in out
    assert ProviderKey.objects.get(label="groq-a").secret == "gsk_rotated_aaaaaaaaa"


def test_key_without_secret_keeps_the_stored_one(write_config):
    run(write_config(CONFIG))
    no_secrets = copy.deepcopy(CONFIG)
    for key in no_secrets["providers"][0]["keys"]:
        key.pop("secret", None)
        key.pop("secret_env", None)

    out = run(write_config(no_secrets))

    assert "nothing to change" in out
    assert ProviderKey.objects.get(label="groq-b").secret == "gsk_bbbbbbbbbbbbbbbb"


def test_dry_run_reports_and_writes_nothing(write_config):
    run(write_config(CONFIG))
    before = snapshot()
    changed = copy.deepcopy(CONFIG)
    changed["providers"][0]["base_url"] = "https://example.com/v1"
    changed["providers"].append({"name": "mistral", "base_url": "https://api.mistral.ai/v1"})

    out = run(write_config(changed), "--dry-run")

    assert "~ provider groq: base_url" in out
    assert "+ provider mistral" in out
    assert "dry run: 2 change(s) would be made; nothing was written" in out
    assert snapshot() == before


def test_prune_removes_what_the_file_no_longer_lists(write_config):
    run(write_config(CONFIG))
    FallbackChain.objects.create(name="handmade")
    smaller = copy.deepcopy(CONFIG)
    del smaller["providers"][1]  # gemini
    smaller["providers"][0]["models"].pop()  # llama-3.1-8b-instant
    smaller["providers"][0]["keys"].pop()  # groq-b
    smaller["chains"][0]["models"] = ["groq/llama-3.3-70b-versatile"]

    # Without --prune nothing is deleted.
    run(write_config(smaller))
    assert Provider.objects.filter(slug="gemini").exists()
    assert FallbackChain.objects.filter(name="handmade").exists()

    out = run(write_config(smaller), "--prune")

    assert "- provider gemini (with its keys and models)" in out
    assert "- model groq/llama-3.1-8b-instant" in out
    assert "- key groq/groq-b" in out
    assert "- chain handmade" in out
    assert list(Provider.objects.values_list("slug", flat=True)) == ["groq"]
    assert list(ProviderKey.objects.values_list("label", flat=True)) == ["groq-a"]
    assert list(UpstreamModel.objects.values_list("model_id", flat=True)) == ["llama-3.3-70b-versatile"]
    assert list(FallbackChain.objects.values_list("name", flat=True)) == ["auto"]


def test_prune_cannot_lean_on_models_the_file_drops(write_config):
    run(write_config(CONFIG))
    broken = copy.deepcopy(CONFIG)
    del broken["providers"][1]  # gemini, still referenced by the chain

    with pytest.raises(CommandError, match=r"chains\[0\]\.models\[1\]: unknown model 'gemini/gemini-2.5-flash'"):
        run(write_config(broken), "--prune")
    assert Provider.objects.filter(slug="gemini").exists()


def test_missing_secret_env_is_an_error_naming_the_variable(write_config, monkeypatch):
    monkeypatch.delenv("GROQ_KEY_A")

    with pytest.raises(CommandError) as caught:
        run(write_config(CONFIG))

    assert "providers[0].keys[0].secret_env: environment variable GROQ_KEY_A is not set" in str(caught.value)
    assert not Provider.objects.exists()


def test_bad_file_is_rejected_with_every_problem_and_changes_nothing(write_config):
    run(write_config(CONFIG))
    before = snapshot()
    bad = copy.deepcopy(CONFIG)
    bad["providers"][0]["base_url"] = "https://changed.example.com/v1"  # a valid change, must not land
    bad["providers"][0]["models"].append({"id": "x", "limits": {"rpm": -5}})
    bad["providers"][0]["models"][1]["tools"] = "yes"
    bad["providers"][0]["adapter"] = "anthropic"
    bad["providers"][1]["keys"][0]["colour"] = "red"
    bad["chains"].append({"name": "emb", "kind": "chat", "models": ["nowhere"]})

    with pytest.raises(CommandError) as caught:
        run(write_config(bad))

    message = str(caught.value)
    assert "invalid config, nothing was changed" in message
    assert "providers[0].models[2].limits.rpm: must be a non-negative integer" in message
    assert "providers[0].models[1].tools: must be true or false" in message
    assert "providers[0].adapter: must be one of 'openai', 'gemini', 'cohere', 'cloudflare' or 'aihorde'" in message
    assert "providers[1].keys[0].colour: unknown field (allowed: label, secret, secret_env, proxy, enabled)" in message
    assert snapshot() == before


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["providers"][0].pop("base_url"), "providers[0].base_url: is required"),
        (lambda c: c["providers"][0].update(base_url="ftp://x"), "providers[0].base_url: must be an http(s) URL"),
        (lambda c: c["providers"][0].update(name="groq/x"), "providers[0].name: must be a slug"),
        (lambda c: c["providers"][0].update(daily_reset_tz="Mars/Olympus"), "providers[0].daily_reset_tz: must be an IANA time zone"),
        (lambda c: c["providers"][0].update(drop_params="seed"), "providers[0].drop_params: must be a list"),
        (lambda c: c["providers"][0]["models"][0].update(context_window="128k"), "providers[0].models[0].context_window: must be a non-negative integer"),
        (lambda c: c["providers"][0]["models"][0].update(kind="video"), "providers[0].models[0].kind: must be one of 'chat', 'embedding'"),
        (lambda c: c["providers"][0]["models"][0]["limits"].update(rpm=1.5), "providers[0].models[0].limits.rpm: must be a non-negative integer"),
        (lambda c: c["providers"][1]["models"][1].pop("family"), "providers[1].models[1].family: required for embedding models"),
        (lambda c: c["providers"].append(copy.deepcopy(c["providers"][0])), "providers[2].name: duplicate provider 'groq' (first at providers[0])"),
        (lambda c: c["providers"][0]["keys"][1].update(label="groq-a"), "providers[0].keys[1].label: duplicate key label 'groq-a'"),
        (lambda c: c["providers"][0]["keys"][1].update(secret_env="ALSO"), "providers[0].keys[1]: give either secret or secret_env, not both"),
        (lambda c: c["providers"][0]["keys"].append({"label": "new"}), "providers[0].keys[2]: a new key needs secret or secret_env"),
        (lambda c: c["chains"][0].update(models=[]), "chains[0].models: must not be empty"),
        (lambda c: c["chains"][0]["models"].append("groq"), "chains[0].models[2]: 'groq' must look like <provider>/<model id>"),
        (lambda c: c["chains"][0]["models"].append("groq/nope"), "chains[0].models[2]: unknown model 'groq/nope'"),
        (lambda c: c["chains"][0]["models"].append("gemini/text-embedding-004"), "chains[0].models[2]: gemini/text-embedding-004 has kind embedding; chain 'auto' has kind chat"),
        (lambda c: c.update(extra=1), "extra: unknown field (allowed: providers, chains, aliases, users)"),
    ],
)
def test_each_mistake_is_named_by_its_path(write_config, mutate, expected):
    bad = copy.deepcopy(CONFIG)
    mutate(bad)

    with pytest.raises(CommandError) as caught:
        run(write_config(bad))

    assert expected in str(caught.value)
    assert not Provider.objects.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- just\n- a list\n", "(top level): must be a mapping with `providers` and/or `chains`"),
        ("providers: [\n", "not valid YAML"),
    ],
)
def test_unusable_files_are_refused(write_config, text, expected):
    with pytest.raises(CommandError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("`", "`")):
        run(write_config(text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run(tmp_path / "nope.yaml")


def test_embedding_chain_mixing_families_is_refused(write_config):
    config = copy.deepcopy(CONFIG)
    config["providers"].append(
        {
            "name": "cohere",
            "adapter": "cohere",
            "base_url": "https://api.cohere.com/v2",
            "keys": [{"label": "c1", "secret": "co-cccccccccccc"}],
            "models": [
                {"id": "embed-english-v3.0", "kind": "embedding", "family": "cohere-embed-v3"},
                {"id": "embed-english-light-v3.0", "kind": "embedding", "family": "cohere-embed-v3"},
            ],
        }
    )
    config["chains"].append(
        {
            "name": "embed",
            "kind": "embedding",
            "models": ["cohere/embed-english-v3.0", "cohere/embed-english-light-v3.0", "gemini/text-embedding-004"],
        }
    )

    with pytest.raises(CommandError) as caught:
        run(write_config(config))

    message = str(caught.value)
    assert "chains[1].models: an embedding chain must use a single model family" in message
    assert "'cohere-embed-v3' (cohere/embed-english-v3.0)" in message
    assert "'gecko' (gemini/text-embedding-004)" in message
    assert not Provider.objects.exists()

    # One family is fine.
    config["chains"][1]["models"].pop()
    run(write_config(config))
    assert FallbackChain.objects.get(name="embed").entries.count() == 2


def test_chain_may_reference_models_already_in_the_database(write_config):
    run(write_config(CONFIG))
    only_chain = {"chains": [{"name": "fast", "models": ["groq/llama-3.1-8b-instant"]}]}

    out = run(write_config(only_chain))

    assert "+ chain fast" in out
    assert Provider.objects.count() == 2  # untouched without --prune


def test_an_error_halfway_through_writing_rolls_everything_back(write_config):
    """A failure after rows were already written (a stored secret that no configured key opens)."""
    old, new = generate_key_spec("old"), generate_key_spec("new")
    with override_settings(FREELLM_ENCRYPTION_KEYS=old):
        run(write_config(CONFIG))
    changed = copy.deepcopy(CONFIG)
    changed["providers"][0]["base_url"] = "https://changed.example.com/v1"
    changed["providers"].append({"name": "mistral", "base_url": "https://api.mistral.ai/v1"})

    with override_settings(FREELLM_ENCRYPTION_KEYS=new):
        with pytest.raises(CommandError, match="nothing was changed: .*'old', which is not configured"):
            run(write_config(changed))

    with connection.cursor() as cursor:
        cursor.execute("SELECT base_url FROM providers_provider WHERE slug = 'groq'")
        assert cursor.fetchone()[0] == "https://api.groq.com/openai/v1"
    assert not Provider.objects.filter(slug="mistral").exists()


def test_optional_provider_and_model_fields(write_config):
    config = {
        "providers": [
            {
                "name": "openrouter",
                "display_name": "OpenRouter",
                "base_url": "https://openrouter.ai/api/v1",
                "headers": {"HTTP-Referer": "https://freellm.local"},
                "keyless": False,
                "drop_params": ["seed", "logprobs"],
                "account_rpm": 20,
                "account_rpd": 50,
                "daily_reset_tz": "America/Los_Angeles",
                "enabled": False,
                "keys": [{"label": "or", "secret": "sk-or-oooooooooooo", "enabled": False}],
                "models": [{"id": "meta-llama/llama-3.3-70b-instruct:free", "enabled": False}],
            }
        ]
    }

    run(write_config(config))

    provider = Provider.objects.get(slug="openrouter")
    assert provider.name == "OpenRouter" and not provider.enabled
    assert provider.headers == {"HTTP-Referer": "https://freellm.local"}
    assert provider.drop_params == ["seed", "logprobs"]
    assert (provider.account_rpm, provider.account_rpd, provider.daily_reset_tz) == (20, 50, "America/Los_Angeles")
    assert not provider.keys.get().enabled
    assert provider.models.get().route_name == "openrouter/meta-llama/llama-3.3-70b-instruct:free"
