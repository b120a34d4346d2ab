"""A catalog entry is an import spec plus catalog metadata: one set of classes, one error format."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.catalog import CatalogError, CatalogProvider, load_provider_file
from providers.config_schema import ConfigError, ProviderSpec, config_parse

ENTRY = """\
slug: example
name: Example
adapter: openai
base_url: https://api.example.com/v1
auth: bearer
docs_url: https://example.com/docs
checked: 2026-11-24
models:
  - {id: m1, kind: chat, tools: true, json: true, context_window: 8192, limits: {rpm: 30}, auto_rank: 5}
"""


def _load(tmp_path: Path, text: str) -> CatalogProvider:
    path = tmp_path / "example.yaml"
    path.write_text(text)
    return load_provider_file(path)


def test_an_entry_writes_the_same_rows_as_the_import_file_saying_the_same(tmp_path):
    entry = _load(tmp_path, ENTRY)
    imported = config_parse({"providers": [{
        "name": "example", "display_name": "Example", "base_url": "https://api.example.com/v1",
        "models": [{"id": "m1", "tools": True, "json": True, "context_window": 8192, "limits": {"rpm": 30}}],
    }]}).providers[0]  # fmt: skip
    assert isinstance(entry, ProviderSpec)
    assert (entry.slug, entry.name) == (imported.slug, imported.name) == ("example", "Example")
    assert entry.db_values() == imported.db_values()
    assert entry.models[0].db_values() == imported.models[0].db_values()
    assert entry.models[0].db_values()["supports_json"] is True


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t + "keys: [{label: k, secret: s}]\n", "keys: not a catalog field"),
        (lambda t: t + "enabled: false\n", "enabled: not a catalog field"),
        (lambda t: t.replace("auto_rank: 5", "auto_rank: 5, enabled: false"), "models[0].enabled: not a catalog"),
        (lambda t: t.replace("context_window: 8192", "context_window: 0"), "models[0].context_window"),
        (lambda t: t.replace("tools: true", 'tools: "yes"'), "models[0].tools: must be true or false"),
        (lambda t: t + "display_name: Other\n", "display_name: unknown field (allowed: slug, name,"),
        (lambda t: t.replace("docs_url: https://example.com/docs\n", ""), "docs_url: is required"),
    ],
)
def test_catalog_problems_read_like_import_problems(tmp_path, edit, message):
    with pytest.raises(CatalogError) as caught:
        _load(tmp_path, edit(ENTRY))
    assert f"example.yaml: {message}" in str(caught.value)


def test_the_import_file_keeps_its_shipped_field_names():
    with pytest.raises(ConfigError) as caught:
        config_parse({"providers": [{"name": "p", "base_url": "https://x.example/v1",
                                     "models": [{"id": "m", "supports_json": True}]}]})
    assert caught.value.problems[0].startswith("providers[0].models[0].supports_json: unknown field (allowed: id,")
    assert " json," in caught.value.problems[0]
    with pytest.raises(ConfigError) as caught:
        config_parse({"providers": [{"slug": "p", "base_url": "https://x.example/v1"}]})
    assert "providers[0].name: is required" in caught.value.problems
