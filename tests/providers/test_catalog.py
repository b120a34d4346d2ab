"""The shipped provider catalog: every entry complete and valid, and bad files rejected by name."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import pytest

from providers.adapters import adapter_names
from providers.catalog import ADAPTER_AUTH, CatalogError, catalog_providers, load_catalog, load_provider_file
from providers.catalog.table import END_MARKER, START_MARKER, providers_table, readme_section, replace_table
from providers.models import ModelKind, Provider

PROVIDERS = catalog_providers()
README = Path(__file__).resolve().parents[2] / "README.md"
BRIEF_PROVIDERS = {
    "gemini", "groq", "cerebras", "mistral", "openrouter", "modelscope", "cohere", "cloudflare", "nvidia",
    "huggingface", "zhipu", "siliconflow", "ollama", "llm7", "pollinations", "together",
}  # fmt: skip


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def test_catalog_lists_at_least_fifteen_free_providers():
    slugs = {p.slug for p in PROVIDERS}
    assert len(slugs) >= 15
    assert BRIEF_PROVIDERS <= slugs


@pytest.mark.parametrize("entry", PROVIDERS, ids=lambda p: p.slug)
def test_entry_is_complete_and_valid(entry):
    assert entry.name and entry.slug
    assert _is_http_url(entry.base_url) and urlparse(entry.base_url).scheme == "https", entry.base_url
    assert _is_http_url(entry.docs_url), entry.docs_url
    assert entry.adapter in adapter_names(), (
        f"{entry.adapter!r} adapter is not in the providers.adapters registry"
    )
    assert entry.adapter in Provider.Adapter.values
    assert entry.auth == ADAPTER_AUTH[entry.adapter] or (entry.keyless and entry.auth == "none")
    assert isinstance(entry.checked, date) and date(2025, 6, 1) <= entry.checked <= date(2027, 1, 1)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.headers.items())
    assert entry.models, "a provider without free models is no use"
    for model in entry.models:
        assert model.id and model.kind in ModelKind.values
        if model.kind == ModelKind.EMBEDDING:
            assert model.family, f"{model.id}: embedding models need a family"
            assert isinstance(model.dimensions, int) and model.dimensions > 0


def test_auto_ranks_are_unique_so_the_default_chain_order_is_defined():
    ranks = [m.auto_rank for p in PROVIDERS for m in p.models if m.auto_rank is not None]
    assert len(ranks) >= 20
    assert len(ranks) == len(set(ranks))


def test_an_embedding_family_has_one_dimension_across_providers():
    dimensions = defaultdict(set)
    for provider in PROVIDERS:
        for model in provider.models:
            if model.kind == ModelKind.EMBEDDING:
                dimensions[model.family].add(model.dimensions)
    assert {family: dims for family, dims in dimensions.items() if len(dims) > 1} == {}
    # bge-m3 is served by several providers, so its chain can fail over.
    assert len([p for p in PROVIDERS if any(m.family == "bge-m3" for m in p.models)]) >= 2


def _model(slug: str, model_id: str):
    entry = next(p for p in PROVIDERS if p.slug == slug)
    model = entry.model(model_id)
    assert model is not None, f"{slug}/{model_id} missing"
    return model


def test_the_catalog_covers_the_documented_quirks_and_modalities():
    by_slug = {p.slug: p for p in PROVIDERS}
    assert by_slug["gemini"].adapter == "gemini" and by_slug["gemini"].auth == "x-goog-api-key"
    assert by_slug["gemini"].daily_reset_tz == "America/Los_Angeles"
    assert by_slug["cohere"].adapter == "cohere"
    assert (
        by_slug["cloudflare"].adapter == "cloudflare"
        and by_slug["cloudflare"].auth == "cloudflare-account-token"
    )
    assert by_slug["openrouter"].account_rpd == 1000
    assert {"HTTP-Referer", "X-Title"} <= set(by_slug["openrouter"].headers)
    assert all(m.id.endswith(":free") for m in by_slug["openrouter"].models)
    assert by_slug["nvidia"].account_rpm == 40
    assert by_slug["mistral"].drop_params
    assert by_slug["pollinations"].keyless and by_slug["llm7"].keyless
    assert not by_slug["groq"].keyless
    assert _model("gemini", "gemini-embedding-001").kind == "embedding"
    assert _model("mistral", "mistral-embed").kind == "embedding"
    assert _model("cohere", "embed-v4.0").kind == "embedding"
    assert _model("cloudflare", "@cf/baai/bge-m3").kind == "embedding"
    assert _model("cloudflare", "@cf/black-forest-labs/flux-1-schnell").kind == "image"
    assert _model("together", "black-forest-labs/FLUX.1-schnell-Free").kind == "image"
    assert _model("pollinations", "flux").kind == "image"
    assert _model("groq", "whisper-large-v3-turbo").kind == "transcription"
    assert _model("cloudflare", "@cf/openai/whisper-large-v3-turbo").kind == "transcription"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """\
slug: {slug}
name: Example
adapter: openai
base_url: https://api.example.com/v1
auth: bearer
docs_url: https://example.com/docs
checked: 2026-11-24
models:
  - {{id: m1, kind: chat, limits: {{rpm: 30}}, auto_rank: 5}}
"""


def test_loader_accepts_a_minimal_entry(tmp_path):
    entry = load_provider_file(_write(tmp_path, "example.yaml", GOOD.format(slug="example")))
    assert entry.models[0].limits.rpm == 30 and entry.keyless is False and entry.daily_reset_tz == "UTC"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("rpm: 30", "rpm: -1"), "models[0].limits.rpm"),
        (lambda t: t.replace("rpm: 30", 'rpm: "30"'), "models[0].limits.rpm"),
        (lambda t: t.replace("https://api.example.com/v1", "api.example.com"), "base_url"),
        (lambda t: t.replace("adapter: openai", "adapter: bard"), "adapter"),
        (lambda t: t.replace("auth: bearer", "auth: x-goog-api-key"), "authenticates with 'bearer'"),
        (lambda t: t.replace("kind: chat", "kind: embedding"), "need a family"),
        (lambda t: t + "daily_reset_tz: Mars/Olympus\n", "daily_reset_tz"),
        (lambda t: t + "colour: blue\n", "colour"),
        (lambda t: t.replace("slug: example", "slug: other"), "must match the file name"),
    ],
)
def test_loader_names_the_file_and_the_bad_field(tmp_path, edit, message):
    _write(tmp_path, "example.yaml", edit(GOOD.format(slug="example")))
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert "example.yaml" in str(caught.value) and message in str(caught.value)


def test_readme_table_replacement_keeps_the_rest_of_the_readme():
    table = providers_table(PROVIDERS)
    assert table.count("\n") == len(PROVIDERS) + 1
    before = f"# freellm\n\nintro\n\n{START_MARKER}\nold table\n{END_MARKER}\n\n## After\n"
    after = replace_table(before, table)
    assert after.startswith("# freellm\n\nintro\n\n") and after.endswith(f"{END_MARKER}\n\n## After\n")
    assert "old table" not in after and table in after
    # Only the opening marker: the closing one is added after the table.
    assert (
        replace_table(f"x\n{START_MARKER}\nrest\n", table)
        == f"x\n{START_MARKER}\n{table}\n{END_MARKER}\nrest\n"
    )


def test_readme_providers_table_is_up_to_date():
    text = README.read_text(encoding="utf-8")
    assert START_MARKER in text and END_MARKER in text, "README.md has no providers table markers"
    assert replace_table(text, readme_section(PROVIDERS)) == text, (
        "README providers table is out of date: run `python manage.py catalog_table`"
    )
