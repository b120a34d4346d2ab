"""Embedding families: vectors are only comparable within one model identity and dimension.

Failover for embeddings therefore stays inside the family of what the client asked for: a chain serves
its own family (chains are single-family; a mixed one is cut to the family of its first entry), a bare
model id or family name may be served by any provider of that family, and an explicit provider/model is
served by that model alone. When nothing in the family can serve, the client gets a 503 naming the
family, never a vector from another one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from routing.errors import GatewayError

if TYPE_CHECKING:
    from routing.config import ModelInfo, RoutingConfig
    from routing.router import Resolution

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    dimensions: int | None

    def __str__(self) -> str:
        return f"{self.name} ({self.dimensions} dims)" if self.dimensions else self.name


def family_of(model: ModelInfo) -> Family:
    # A model without a declared family is its own family.
    return Family(model.family or model.model_id, model.dimensions)


def is_family_name(cfg: RoutingConfig, name: str) -> bool:
    """Whether ``name`` is only known as an embedding family (not as a chain, route or model id)."""
    if name in cfg.chains or name in cfg.by_name or name in cfg.by_model_id:
        return False
    return any(m.kind == "embedding" and m.family == name for m in cfg.models)


def embedding_resolution(cfg: RoutingConfig, name: str) -> tuple[Resolution, Family]:
    """Resolve an embeddings ``model`` (chain, provider/model, bare model id or family name) to one family."""
    from routing import router

    if is_family_name(cfg, name):
        return family_resolution(cfg, name, None)
    return family_resolution(cfg, name, router.resolve(cfg, name, "embedding"))


def family_resolution(
    cfg: RoutingConfig, name: str, resolution: Resolution | None
) -> tuple[Resolution, Family]:
    """The embedding models allowed to serve ``name``, all of one family, and that family.

    ``resolution`` is the router's resolution of ``name``; None when ``name`` is a family name.
    """
    from routing.router import Resolution

    if resolution is None:
        members = tuple(m for m in cfg.models if m.kind == "embedding" and m.family == name)
        family = family_of(members[0])
        return Resolution(_in_family(cfg.models, family), None, explicit=False), family
    if not resolution.models:
        return resolution, Family(name, None)
    family = family_of(resolution.models[0])
    if resolution.chain is not None:
        members = tuple(m for m in resolution.models if family_of(m) == family)
        if len(members) != len(resolution.models):
            others = sorted({str(family_of(m)) for m in resolution.models} - {str(family)})
            log.error(
                "embedding chain %s mixes families %s and %s; serving %s only",
                resolution.chain,
                family,
                ", ".join(others),
                family,
            )
        return replace(resolution, models=members), family
    if name in cfg.by_name or (resolution.alias and resolution.explicit):
        return resolution, family  # provider/model (or an alias of one): that model and nothing else
    # A bare model id: every provider of its family may serve it, the providers of that id first.
    rest = tuple(m for m in _in_family(cfg.models, family) if m not in resolution.models)
    own = tuple(m for m in resolution.models if family_of(m) == family)
    return replace(resolution, models=own + rest), family


def _in_family(models, family: Family) -> tuple[ModelInfo, ...]:
    return tuple(m for m in models if m.kind == "embedding" and family_of(m) == family)


def family_unavailable(exc: GatewayError, family: Family) -> GatewayError:
    """The router's 'nothing could serve' error, reworded to name the family (503, Retry-After kept).
    Other errors (the upstream refused the request itself) go back unchanged."""
    if exc.status not in (429, 502, 503, 504):
        return exc
    return GatewayError(
        503,
        f"No provider of the embedding family {family} can serve this request now; vectors from another "
        f"family are never substituted. {exc.message}",
        code="embedding_family_unavailable",
        headers=exc.headers,
    )
