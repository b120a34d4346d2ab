"""GET /v1/models and /v1/models/{id}: the chains and models a key may use."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest
from ninja import Router

from routing.budgets import allows_name
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.quota import get_quota_store

router = Router(tags=["models"])


@router.get("/models", summary="List the chains and models you may use")
async def list_models(request: HttpRequest, available: bool = False):
    entries = await model_entries(available=available)
    # Only what this key (and its user) may use.
    return {"object": "list", "data": [e for e in entries if allows_name(request.auth, e["id"])]}


@router.get("/models/{path:model}", summary="Describe one chain or model")
async def retrieve_model(request: HttpRequest, model: str):
    for entry in await model_entries(available=False):
        if entry["id"] == model and allows_name(request.auth, model):
            return entry
    raise GatewayError(404, f"The model '{model}' does not exist or is disabled", code="model_not_found",
                       param="model")


async def model_entries(*, available: bool) -> list[dict[str, Any]]:
    """Chains first, then models; with ``available`` only those with a healthy key and quota now."""
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
    for m in cfg.models:
        if not available or await usable((m,)):
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": m.provider.slug,
                         "kind": m.kind, "context_window": m.context_window})
    return data
