"""Model aliases in the router: first match wins, exact names beat them, the target decides the rest."""

from __future__ import annotations

import pytest

from providers.models import ChainEntry, FallbackChain, ModelAlias, Provider, UpstreamModel
from routing.config import load_routing_config
from routing.errors import GatewayError
from routing.router import resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def cfg_with(db):
    mistral = Provider.objects.create(slug="mistral", name="mistral", base_url="https://api.mistral.ai/v1",
                                      keyless=True)
    codestral = UpstreamModel.objects.create(provider=mistral, model_id="codestral-latest")
    small = UpstreamModel.objects.create(provider=mistral, model_id="mistral-small-latest")
    UpstreamModel.objects.create(provider=mistral, model_id="claude-lookalike")
    UpstreamModel.objects.create(provider=mistral, model_id="mistral-embed", kind="embedding", family="m")
    coding = FallbackChain.objects.create(name="coding")
    ChainEntry.objects.create(chain=coding, model=codestral, position=1)
    ChainEntry.objects.create(chain=coding, model=small, position=2)
    FallbackChain.objects.create(name="claude-chain")

    def build(*aliases: tuple[str, str] | tuple[str, str, bool]):
        for position, (pattern, target, *enabled) in enumerate(aliases, start=1):
            ModelAlias.objects.create(pattern=pattern, target=target, position=position,
                                      enabled=enabled[0] if enabled else True)
        return load_routing_config("test")

    return build


def names(resolution) -> list[str]:
    return [m.name for m in resolution.models]


def test_an_alias_to_a_chain_serves_the_chain_with_stickiness(cfg_with):
    cfg = cfg_with(("claude-*", "coding"))

    resolution = resolve(cfg, "claude-sonnet-4-5-20250929", "chat")

    assert names(resolution) == ["mistral/codestral-latest", "mistral/mistral-small-latest"]
    assert (resolution.chain, resolution.alias, resolution.explicit) == ("coding", "claude-*", False)


def test_an_alias_to_a_provider_model_is_explicit(cfg_with):
    cfg = cfg_with(("gpt-5*", "mistral/mistral-small-latest"))

    resolution = resolve(cfg, "gpt-5-codex", "chat")

    assert names(resolution) == ["mistral/mistral-small-latest"]
    assert (resolution.chain, resolution.alias, resolution.explicit) == (None, "gpt-5*", True)


def test_the_first_matching_alias_wins(cfg_with):
    cfg = cfg_with(("claude-opus-*", "mistral/codestral-latest"), ("claude-*", "coding"), ("*", "coding"))

    assert resolve(cfg, "claude-opus-4-1", "chat").alias == "claude-opus-*"
    assert resolve(cfg, "claude-haiku-4-5", "chat").alias == "claude-*"
    assert resolve(cfg, "anything", "chat").alias == "*"


def test_exact_chain_model_and_model_id_names_beat_aliases(cfg_with):
    cfg = cfg_with(("claude-*", "coding"), ("mistral/*", "coding"), ("codestral-*", "coding"))

    assert resolve(cfg, "claude-chain", "chat").chain == "claude-chain"
    assert resolve(cfg, "claude-chain", "chat").alias is None
    assert names(resolve(cfg, "claude-lookalike", "chat")) == ["mistral/claude-lookalike"]
    assert names(resolve(cfg, "mistral/mistral-small-latest", "chat")) == ["mistral/mistral-small-latest"]
    assert names(resolve(cfg, "codestral-latest", "chat")) == ["mistral/codestral-latest"]
    # ... while a name only the pattern knows goes to the alias' target.
    assert resolve(cfg, "mistral/unknown", "chat").alias == "mistral/*"


def test_patterns_are_case_sensitive_and_disabled_aliases_do_not_match(cfg_with):
    cfg = cfg_with(("claude-*", "coding", False), ("Claude-?", "coding"))

    with pytest.raises(GatewayError) as excinfo:
        resolve(cfg, "claude-x", "chat")
    assert (excinfo.value.status, excinfo.value.code) == (404, "model_not_found")
    assert resolve(cfg, "Claude-x", "chat").alias == "Claude-?"
    with pytest.raises(GatewayError):
        resolve(cfg, "Claude-xy", "chat")


def test_an_alias_whose_target_is_gone_is_a_404_naming_it(cfg_with):
    cfg = cfg_with(("claude-*", "coding"))
    FallbackChain.objects.filter(name="coding").update(enabled=False)
    cfg = load_routing_config("after")

    with pytest.raises(GatewayError) as excinfo:
        resolve(cfg, "claude-sonnet-4-5", "chat")

    assert excinfo.value.status == 404
    assert "matches the alias 'claude-*', whose target 'coding' does not exist or is disabled" in excinfo.value.message


def test_an_alias_keeps_the_kind_check_of_its_target(cfg_with):
    cfg = cfg_with(("embed-*", "mistral/mistral-embed"))

    with pytest.raises(GatewayError) as excinfo:
        resolve(cfg, "embed-large", "chat")

    assert (excinfo.value.status, excinfo.value.code) == (400, "model_kind_mismatch")
    assert names(resolve(cfg, "embed-large", "embedding")) == ["mistral/mistral-embed"]
