"""GET /v1/models and /v1/models/{id}: the chains and models a key may use, in OpenAI's shape or, for a
request that carries ``anthropic-version`` (the Anthropic SDKs, Claude Code), in Anthropic's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from ninja import Router

from routing.budgets import allows_name, scopes_of
from routing.config import ModelInfo, get_routing_config
from routing.errors import GatewayError
from routing.quota import get_quota_store

from . import anthropic

router = Router(tags=["models"])


@router.get("/models", summary="List the chains and models you may use")
async def list_models(request: HttpRequest, available: bool = False, limit: int | None = None,
                      after_id: str | None = None, before_id: str | None = None):
    entries = await entries_for(request.auth, available=available)
    if anthropic.wants_anthropic_shape(request):
        return anthropic.model_page(entries, limit=limit, after_id=after_id, before_id=before_id)
    return {"object": "list", "data": entries}


@router.get("/models/{path:model}", summary="Describe one chain or model (or what an alias leads to)")
async def retrieve_model(request: HttpRequest, model: str):
    as_anthropic = anthropic.wants_anthropic_shape(request)
    scopes = await scopes_of(request.auth)
    entries = {entry["id"]: entry for entry in await model_entries(available=False)}
    if model in entries and allows_name(scopes, model):
        return anthropic.model_info(entries[model]) if as_anthropic else entries[model]
    # A name only an alias knows (clients check the model they were configured with): its target, so named.
    cfg = await get_routing_config()
    alias = next((a for a in cfg.aliases if a.matches(model)), None)
    if alias is not None and alias.target in entries and allows_name(scopes, alias.target):
        entry = {**entries[alias.target], "id": model, "alias": {"pattern": alias.pattern, "target": alias.target}}
        return anthropic.model_info(entry) if as_anthropic else entry
    raise GatewayError(404, f"The model '{model}' does not exist or is disabled", code="model_not_found",
                       param="model")


async def model_entries(*, available: bool) -> list[dict[str, Any]]:
    """Chains first, then models; with ``available`` only those with a healthy key and quota now. A model
    with a canonical id is listed once under it, with every provider's spelling in ``providers``."""
    cfg = await get_routing_config()
    store = get_quota_store()
    created = int(time.time())

    async def usable(models) -> bool:
        for m in models:
            for key in m.keys:
                route = m.route(key)
                status = await store.status(route)
                if status.health != "open" and await store.headroom(route) > 0:
                    return True
        return False

    data = []
    for chain in cfg.chains.values():
        if not available or await usable(chain.models):
            data.append({"id": chain.name, "object": "model", "created": created, "owned_by": "freellm",
                         "kind": chain.kind, "chain": [m.name for m in chain.models]})
    for canonical, members in cfg.by_canonical.items():
        if not available or await usable(members):
            windows = [m.context_window for m in members if m.context_window]
            data.append({"id": canonical, "object": "model", "created": created, "owned_by": "freellm",
                         "kind": members[0].kind, "context_window": min(windows) if windows else None,
                         "providers": [m.name for m in members]})
    for m in cfg.models:
        if m.canonical:
            continue
        if not available or await usable((m,)):
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": m.provider.slug,
                         "kind": m.kind, "context_window": m.context_window})
    return data


@dataclass(frozen=True)
class Listed:
    """A chain or a model as the native front doors (Gemini, Ollama) describe it, from its models."""

    name: str
    kind: str
    owner: str  # the provider's slug, or "freellm" for a chain
    models: tuple[ModelInfo, ...]

    @property
    def context_window(self) -> int | None:
        # A chain serves up to its largest model: gating routes a long prompt past the smaller ones.
        return max((m.context_window for m in self.models if m.context_window), default=None)

    @property
    def supports_tools(self) -> bool:
        return any(m.supports_tools for m in self.models)

    @property
    def supports_vision(self) -> bool:
        return any(m.supports_vision for m in self.models)

    @property
    def description(self) -> str:
        if self.owner == "freellm":
            return f"freellm chain over {', '.join(m.name for m in self.models) or 'no models yet'}"
        return f"{self.models[0].model_id} from {self.owner}, through freellm"


async def listed_models(kinds: tuple[str, ...] = ("chat", "embedding")) -> list[Listed]:
    """Chains first, then models, of the given kinds."""
    cfg = await get_routing_config()
    out = [Listed(c.name, c.kind, "freellm", c.models) for c in cfg.chains.values() if c.kind in kinds]
    out.extend(Listed(m.name, m.kind, m.provider.slug, (m,)) for m in cfg.models if m.kind in kinds)
    return out


async def entries_for(api_key, *, available: bool = False) -> list[dict[str, Any]]:
    """``model_entries`` of what ``api_key`` may use (GET /v1/models, the MCP tools and the playground list
    these): narrowed by the key's and its user's allowed chains and models (routing.budgets)."""
    entries = await model_entries(available=available)
    scopes = await scopes_of(api_key) if api_key is not None else ()
    return [e for e in entries if allows_name(scopes, e["id"])]
