"""The `aliases:` section of the config file: import (idempotent, ordered, checked), export, prune."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from providers.models import FallbackChain, ModelAlias, Provider
from providers.services import config_export

pytestmark = pytest.mark.django_db

CONFIG = {
    "providers": [
        {
            "name": "mistral",
            "base_url": "https://api.mistral.ai/v1",
            "keys": [{"label": "m1", "secret": "mk-1111111111111111"}],
            "models": [{"id": "codestral-latest", "tools": True}, {"id": "mistral-small-latest"}],
        },
    ],
    "chains": [{"name": "coding", "models": ["mistral/codestral-latest", "mistral/mistral-small-latest"]}],
    "aliases": [
        {"pattern": "claude-*", "target": "coding"},
        {"pattern": "gpt-5*", "target": "mistral/mistral-small-latest", "enabled": False},
        {"pattern": "*", "target": "coding"},
    ],
}


def run(path, *args) -> str:
    out = io.StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


def aliases() -> list[tuple[str, str, bool]]:
    return [(a.pattern, a.target, a.enabled) for a in ModelAlias.objects.all()]


def test_import_creates_aliases_in_file_order(write_config):
    out = run(write_config(CONFIG))

    assert "+ alias claude-*" in out
    assert aliases() == [
        ("claude-*", "coding", True), ("gpt-5*", "mistral/mistral-small-latest", False), ("*", "coding", True),
    ]


def test_import_is_idempotent_and_follows_a_new_order(write_config):
    run(write_config(CONFIG))
    assert "nothing to change" in run(write_config(CONFIG))

    reordered = {**CONFIG, "aliases": [CONFIG["aliases"][2], CONFIG["aliases"][0]]}
    out = run(write_config(reordered))

    assert "~ alias *: position" in out and "~ alias claude-*: position" in out
    # Without --prune, the alias the file no longer lists stays (after the listed ones).
    assert [a[0] for a in aliases()] == ["*", "claude-*", "gpt-5*"]
    out = run(write_config(reordered), "--prune")
    assert "- alias gpt-5*" in out
    assert [a[0] for a in aliases()] == ["*", "claude-*"]


def test_export_writes_aliases_back_and_the_round_trip_is_lossless(write_config):
    run(write_config(CONFIG))
    exported = config_export(with_secrets=True)
    assert exported["aliases"] == [
        {"pattern": "claude-*", "target": "coding"},
        {"pattern": "gpt-5*", "target": "mistral/mistral-small-latest", "enabled": False},
        {"pattern": "*", "target": "coding"},
    ]
    text = yaml.safe_dump(exported, sort_keys=False)
    FallbackChain.objects.all().delete()
    Provider.objects.all().delete()
    ModelAlias.objects.all().delete()

    run(write_config(text))

    assert config_export(with_secrets=True) == exported


@pytest.mark.parametrize(
    ("aliases_section", "expected"),
    [
        ([{"pattern": "claude-*", "target": "nowhere"}],
         "aliases[0].target: 'nowhere' is neither a chain nor a <provider>/<model id>"),
        ([{"pattern": "claude-*", "target": "mistral/unknown-model"}], "aliases[0].target: 'mistral/unknown-model'"),
        ([{"pattern": "a*", "target": "coding"}, {"pattern": "a*", "target": "coding"}],
         "aliases[1].pattern: duplicate alias pattern 'a*' (first at aliases[0])"),
        ([{"pattern": "", "target": "coding"}], "aliases[0].pattern: must not be empty"),
        ([{"pattern": "a*", "to": "coding"}], "aliases[0].to: unknown field (allowed: pattern, target, enabled)"),
    ],
)
def test_bad_aliases_are_refused_with_their_path_and_nothing_changes(write_config, aliases_section, expected):
    with pytest.raises(CommandError) as excinfo:
        run(write_config({**CONFIG, "aliases": aliases_section}))

    assert expected in str(excinfo.value)
    assert not Provider.objects.exists() and not ModelAlias.objects.exists()


def test_an_alias_may_point_at_a_chain_already_in_the_database_but_not_under_prune(write_config):
    run(write_config(CONFIG))
    only_aliases = {"aliases": [{"pattern": "codex-*", "target": "coding"}]}

    assert "+ alias codex-*" in run(write_config(only_aliases))
    with pytest.raises(CommandError, match="aliases\\[0\\].target: 'coding'"):
        run(write_config(only_aliases), "--prune")
