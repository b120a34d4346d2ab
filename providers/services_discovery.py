"""Model discovery: what a configured provider serves today, against what the database has.

``provider_models_discover`` asks the provider's own model list (through its adapter's ``list_models``,
with one of its keys and that key's proxy) and compares it with the provider's UpstreamModel rows:
models that are new, gone (in the database, no longer listed) or changed (a capability the list states
differs from the stored one). Nothing is written. ``provider_models_apply`` then adds the chosen new
models and writes the stated capabilities of changed ones. Added models join no chain: placing a model
in ``auto`` or any other chain stays an admin decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from .adapters import get_adapter
from .adapters.base import DiscoveredModel, ErrorKind, Target, Timeouts, UpstreamError
from .models import ModelKind, Provider, ProviderKey, UpstreamModel, mask_secret
from .netguard import guarded_async_client

# DiscoveredModel attribute → UpstreamModel field, for what a list may state.
COMPARED = ("kind", "context_window", "supports_tools", "supports_vision", "supports_json")


@dataclass(frozen=True)
class ModelChange:
    model_id: str
    field: str
    stored: object
    listed: object

    def __str__(self) -> str:
        return f"{self.field}: {self.stored!r} → {self.listed!r}"


@dataclass
class DiscoveryResult:
    provider: Provider
    ok: bool
    detail: str  # what was asked and how it went; on failure, why (never the secret)
    key_label: str = ""
    new: list[DiscoveredModel] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # stored model ids the list no longer has
    changed: dict[str, list[ModelChange]] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def listed(self) -> int:
        return len(self.new) + len(self.changed) + self.unchanged

    def lines(self) -> list[str]:
        """One line per difference, for the command line (+ new, - gone, ~ changed)."""
        out = []
        for model in self.new:
            out.append(f"+ {self.provider.slug}: model {model.id}: new ({describe(model)})")
        for model_id in self.gone:
            out.append(f"- {self.provider.slug}: model {model_id}: no longer listed by the provider")
        for model_id, changes in self.changed.items():
            out.append(f"~ {self.provider.slug}: model {model_id}: {'; '.join(str(c) for c in changes)}")
        return out


def describe(model: DiscoveredModel) -> str:
    parts = [model.kind or "kind not stated"]
    if model.context_window:
        parts.append(f"{model.context_window:,} context")
    parts.extend(name for name, flag in (("tools", model.supports_tools), ("vision", model.supports_vision),
                                         ("JSON", model.supports_json)) if flag)
    return ", ".join(parts)


def discovery_key(provider: Provider) -> ProviderKey | None:
    """The one key discovery calls with: an enabled key not known to be invalid, one with a secret first."""
    keys = [k for k in provider.keys.filter(enabled=True).order_by("label") if k.status != ProviderKey.Status.INVALID]
    return next((k for k in keys if k.secret), None) or (keys[0] if keys else None)


@sensitive_variables("secret", "target")
def provider_models_discover(*, provider: Provider) -> DiscoveryResult:
    """Ask ``provider`` for its model list and compare it with its models in the database (no writes)."""
    key = discovery_key(provider)
    if key is None and not provider.keyless:
        return DiscoveryResult(provider, False, "no usable key: add an enabled key (or mark the provider keyless)")
    try:
        adapter = get_adapter(provider.adapter)
    except KeyError:
        return DiscoveryResult(provider, False, f"no {provider.adapter!r} adapter installed")
    secret = key.secret if key else ""
    target = Target(
        provider=provider.slug,
        base_url=provider.base_url,
        model="",
        api_key=secret or None,
        key_label=key.label if key else "",
        headers=dict(provider.headers or {}),
        drop_params=frozenset(provider.drop_params or ()),
        proxy=(key.proxy if key else "") or provider.proxy or "",
    )
    label = key.label if key else "no key"
    try:
        listed = async_to_sync(_list)(adapter, target)
    except UpstreamError as exc:
        return DiscoveryResult(provider, False, _failure(exc, secret, label), label)
    except httpx.HTTPError as exc:
        return DiscoveryResult(provider, False, f"could not reach the model list ({type(exc).__name__})", label)
    return _compare(provider, listed, label)


async def _list(adapter, target: Target) -> list[DiscoveredModel]:
    timeouts = Timeouts(connect=settings.FREELLM_CONNECT_TIMEOUT, first_token=30.0, idle=settings.FREELLM_IDLE_TIMEOUT)
    async with guarded_async_client(proxy=target.proxy or None) as client:
        return await adapter.list_models(client, target, timeouts)


def _failure(exc: UpstreamError, secret: str, label: str) -> str:
    message = exc.message.replace(secret, mask_secret(secret)) if secret else exc.message
    message = " ".join(message.split())[:300]
    if exc.kind == ErrorKind.AUTH:
        return f"the provider refused key {label} ({exc.status or 'auth'}): {message}"
    if exc.kind == ErrorKind.RATE_LIMITED:
        return f"key {label} is rate limited right now; try again later: {message}"
    if exc.kind == ErrorKind.NOT_FOUND and "does not support listing" in message:
        return message
    if exc.kind == ErrorKind.NOT_FOUND:
        return f"this provider has no model list at its base URL ({exc.status or 404}): {message}"
    return f"the model list failed ({exc.kind}): {message}"


def _compare(provider: Provider, listed: list[DiscoveredModel], label: str) -> DiscoveryResult:
    stored = {m.model_id: m for m in provider.models.all()}
    result = DiscoveryResult(provider, True, f"{len(listed)} model(s) listed (asked with key {label})", label)
    seen: set[str] = set()
    for model in listed:
        if model.id in seen:
            continue
        seen.add(model.id)
        row = stored.get(model.id)
        if row is None:
            result.new.append(model)
            continue
        changes = [
            ModelChange(model.id, name, getattr(row, name), getattr(model, name))
            for name in COMPARED
            if getattr(model, name) is not None and getattr(model, name) != getattr(row, name)
        ]
        if changes:
            result.changed[model.id] = changes
        else:
            result.unchanged += 1
    result.gone = sorted(set(stored) - seen)
    return result


@dataclass
class ApplyReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


@transaction.atomic
def provider_models_apply(*, result: DiscoveryResult, add: Iterable[str] | None = None,
                          update: Iterable[str] | None = None) -> ApplyReport:
    """Write a discovery: create the ``add`` new models (default: all new) and store the stated
    capabilities of the ``update`` changed ones (default: all changed). No chain is touched."""
    provider = result.provider
    report = ApplyReport()
    wanted_new = None if add is None else set(add)
    wanted_changed = None if update is None else set(update)
    for model in result.new:
        if wanted_new is not None and model.id not in wanted_new:
            continue
        values = {name: getattr(model, name) for name in COMPARED if getattr(model, name) is not None}
        values.setdefault("kind", ModelKind.CHAT)
        if values["kind"] not in ModelKind.values:
            values["kind"] = ModelKind.CHAT
        if values["kind"] == ModelKind.EMBEDDING and model.dimensions:
            values["dimensions"] = model.dimensions
        _, created = UpstreamModel.objects.get_or_create(provider=provider, model_id=model.id, defaults=values)
        if created:
            report.added.append(model.id)
    for model_id, changes in result.changed.items():
        if wanted_changed is not None and model_id not in wanted_changed:
            continue
        row = UpstreamModel.objects.filter(provider=provider, model_id=model_id).first()
        if row is None:
            continue
        for change in changes:
            setattr(row, change.field, change.listed)
        row.save(update_fields=[c.field for c in changes])
        report.updated.append(model_id)
    return report
