"""Writes that bring the provider catalog (providers/catalog/*.yaml) into the database.

``provider_add_from_catalog`` creates a provider with its models and limits, stores and tests the pasted
keys, and places its models in the default ``auto`` chain (chat) and per-family embedding chains.
``catalog_sync`` later updates providers and models from a newer catalog without touching keys or what
an admin changed on purpose.

How "on purpose" is told apart: every catalog write records the value it wrote in ``catalog_values``
(on Provider and UpstreamModel). A field still equal to that record is the catalog's to update; a field
that differs was edited in the admin and is kept. Models the catalog created and an admin deleted stay
deleted; models dropped from the catalog are disabled, not deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from .catalog import CatalogError, CatalogModel, CatalogProvider, catalog_provider, catalog_providers
from .config_schema import ConfigSpec
from .models import ChainEntry, FallbackChain, ModelKind, Provider, ProviderKey, UpstreamModel, mask_secret
from .services import config_apply, provider_key_test

AUTO_CHAIN = "auto"
ANONYMOUS_KEY_LABEL = "anonymous"
# Provider fields the catalog owns (everything else, keys included, is the admin's).
PROVIDER_FIELDS = (
    "name",
    "adapter",
    "base_url",
    "headers",
    "drop_params",
    "keyless",
    "account_rpm",
    "account_rpd",
    "daily_reset_tz",
)
MODEL_FIELDS = (
    "kind",
    "family",
    "dimensions",
    "context_window",
    "supports_tools",
    "supports_vision",
    "supports_json",
    "supports_fim",
    "rpm",
    "rpd",
    "tpm",
    "tpd",
    "enabled",
)
# Keys of catalog_values that are bookkeeping, not field values.
_MODEL_IDS = "model_ids"
_AUTO_RANK = "auto_rank"
_UNSET = object()


def catalog_provider_values(entry: CatalogProvider) -> dict[str, Any]:
    """The Provider field values the catalog owns for an entry."""
    values = entry.db_values()
    return {name: values[name] for name in PROVIDER_FIELDS}


def catalog_model_values(model: CatalogModel) -> dict[str, Any]:
    # A catalog model is always enabled (the file cannot say otherwise); an admin may disable it.
    values = model.db_values()
    return {name: values[name] for name in MODEL_FIELDS}


def embedding_chain_name(family: str) -> str:
    """Embedding chains are named after their family: clients send e.g. ``model="bge-m3"``."""
    return family


# ---------------------------------------------------------------------------------------------------
# Add a provider from the catalog
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyCheck:
    label: str
    masked: str  # never the secret itself
    created: bool  # False: the same secret was already stored under ``label``
    ok: bool | None  # True works, False rejected, None inconclusive (see provider_key_test)
    detail: str


@dataclass
class CatalogAddResult:
    provider: Provider
    created: bool
    changes: list[str] = field(default_factory=list)  # provider/model writes, one line each
    keys: list[KeyCheck] = field(default_factory=list)
    placements: list[str] = field(default_factory=list)  # e.g. "auto #3: groq/llama-3.3-70b-versatile"


@sensitive_variables("keys", "secrets", "secret", "token")
def provider_add_from_catalog(
    *, slug: str, keys: Iterable[str], base_url: str | None = None, test_keys: bool = True
) -> CatalogAddResult:
    """Create (or bring up to date) the catalog provider ``slug``, add ``keys`` and place its models.

    ``keys`` are raw secrets, one per item; blanks and duplicates are ignored and a secret already stored
    for this provider is not stored twice (it is tested again). A keyless provider without keys gets one
    empty-secret key labelled ``anonymous`` so the router has a route to use. ``base_url`` overrides the
    catalog's (a local mirror, a proxy, the test emulator); it counts as an admin edit for catalog_sync.
    Each key is then tested with one real, cheap upstream call; the results are returned and stored on
    the key (status ACTIVE / INVALID). Raises ``CatalogError`` for an unknown slug or unusable keys.
    """
    entry = catalog_provider(slug)
    secrets = _clean_secrets(keys)
    if not secrets and not entry.keyless:
        raise CatalogError(f"{entry.name} needs an API key: paste at least one")
    if entry.auth == "cloudflare-account-token":
        for secret in secrets:
            account_id, sep, token = secret.partition(":")
            if not (sep and account_id.strip() and token.strip()):
                raise CatalogError(
                    f"{entry.name} keys look like <account_id>:<api token> (got one ending in {mask_secret(secret)})"
                )

    with transaction.atomic():
        provider = Provider.objects.filter(slug=slug).first()
        created = provider is None
        if created:
            changes = _create_provider(entry, base_url=base_url)
            provider = Provider.objects.get(slug=slug)
        else:
            wanted = {"base_url": base_url} if base_url else {}
            changes = _sync_provider(provider, entry, apply=True, overrides=wanted)
        new_keys = _add_keys(provider, secrets)
        placements = _place_models(provider, entry, only=None)

    checks = []
    for key, was_created in new_keys:
        if test_keys:
            outcome = provider_key_test(key=key)
            ok, detail = outcome.ok, outcome.detail
        else:
            ok, detail = None, "not tested"
        checks.append(KeyCheck(key.label, key.masked_secret, was_created, ok, detail))
    return CatalogAddResult(provider, created, changes, checks, placements)


@sensitive_variables("keys", "seen", "raw", "secret")
def _clean_secrets(keys: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for raw in keys:
        secret = raw.strip()
        if secret and secret not in seen:
            seen.append(secret)
    return seen


def _create_provider(entry: CatalogProvider, *, base_url: str | None) -> list[str]:
    """Create through the declarative-config upsert (one validator and writer for both), then record
    what the catalog wrote."""
    spec = entry.model_copy(update={"base_url": base_url}) if base_url else entry
    report = config_apply(spec=ConfigSpec(providers=[spec]))
    provider = Provider.objects.get(slug=entry.slug)
    recorded = catalog_provider_values(entry)  # the catalog's own base_url: an override is an admin edit
    recorded[_MODEL_IDS] = [model.id for model in entry.models]
    provider.catalog_values = recorded
    provider.save(update_fields=["catalog_values"])
    for model in provider.models.all():
        catalog_model = entry.model(model.model_id)
        if catalog_model is not None:
            model.catalog_values = _model_record(catalog_model)
            model.save(update_fields=["catalog_values"])
    return [f"{line} (from catalog)" for line in report.changes]


def _model_record(model: CatalogModel) -> dict[str, Any]:
    record = catalog_model_values(model)
    record[_AUTO_RANK] = model.auto_rank
    return record


@sensitive_variables("secrets", "secret", "by_secret")
def _add_keys(provider: Provider, secrets: list[str]) -> list[tuple[ProviderKey, bool]]:
    """Store new secrets under fresh labels; return (key, created) for every secret given."""
    stored = list(provider.keys.all())
    by_secret = {key.secret: key for key in stored}
    labels = {key.label for key in stored}
    result: list[tuple[ProviderKey, bool]] = []
    if not secrets:
        # Keyless provider with nothing pasted: one anonymous route (reuse it when it exists).
        key = by_secret.get("")
        if key is None:
            key = ProviderKey.objects.create(
                provider=provider, label=_free_label(ANONYMOUS_KEY_LABEL, labels)
            )
            return [(key, True)]
        return [(key, False)]
    number = 1
    for secret in secrets:
        key = by_secret.get(secret)
        if key is not None:
            result.append((key, False))
            continue
        while f"{provider.slug}-{number}" in labels:
            number += 1
        label = f"{provider.slug}-{number}"
        labels.add(label)
        result.append((ProviderKey.objects.create(provider=provider, label=label, secret=secret), True))
    return result


def _free_label(base: str, taken: set[str]) -> str:
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}-{n}"
    return label


# ---------------------------------------------------------------------------------------------------
# Chain placement
# ---------------------------------------------------------------------------------------------------


def _place_models(provider: Provider, entry: CatalogProvider, *, only: set[str] | None) -> list[str]:
    """Put the provider's enabled catalog models into their chains (those not there yet).

    Chat models with an ``auto_rank`` go into ``auto`` before the first entry ranked after them;
    embedding models go at the end of the chain named after their family. ``only`` limits this to
    the given model ids (catalog_sync places only the models it creates).
    """
    placed: list[tuple[FallbackChain, UpstreamModel]] = []
    for model in provider.models.filter(enabled=True).order_by("model_id"):
        catalog_model = entry.model(model.model_id)
        if catalog_model is None or (only is not None and model.model_id not in only):
            continue
        if catalog_model.kind == ModelKind.CHAT and catalog_model.auto_rank is not None:
            chain = _chain(
                AUTO_CHAIN, ModelKind.CHAT, "Default chain: free chat models, best first (from the catalog)"
            )
            rank = catalog_model.auto_rank
        elif catalog_model.kind == ModelKind.EMBEDDING:
            chain = _chain(
                embedding_chain_name(catalog_model.family),
                ModelKind.EMBEDDING,
                f"Embedding models of the {catalog_model.family} family ({catalog_model.dimensions} dimensions)",
            )
            rank = None
        else:
            continue
        if _insert_ranked(chain, model, rank) is not None:
            placed.append((chain, model))
    # Positions are reported once everything is in, so they are the final ones.
    final = []
    for chain, model in placed:
        order = list(chain.entries.order_by("position", "pk").values_list("model_id", flat=True))
        final.append((chain.name, order.index(model.pk) + 1, model.route_name))
    return [f"{name} #{position}: {route}" for name, position, route in sorted(final)]


def _chain(name: str, kind: str, description: str) -> FallbackChain:
    chain, _ = FallbackChain.objects.get_or_create(
        name=name, defaults={"kind": kind, "description": description}
    )
    return chain


def _insert_ranked(chain: FallbackChain, model: UpstreamModel, rank: int | None) -> int | None:
    """Insert ``model`` into ``chain`` by rank and renumber; None when it is already there.

    Entries without a rank (added by hand) keep their place; a model without a rank goes last.
    """
    entries = list(chain.entries.select_related("model").order_by("position", "pk"))
    if any(e.model_id == model.pk for e in entries):
        return None
    index = insert_index([e.model.catalog_values.get(_AUTO_RANK) for e in entries], rank)
    entries.insert(index, ChainEntry(chain=chain, model=model))
    for position, entry in enumerate(entries):
        if entry.pk is None:
            entry.position = position
            entry.save()
        elif entry.position != position:
            entry.position = position
            entry.save(update_fields=["position"])
    return index


def insert_index(ranks: list[int | None], rank: int | None) -> int:
    """Where a model ranked ``rank`` goes among entries ranked ``ranks`` (None: unranked)."""
    if rank is None:
        return len(ranks)
    for index, other in enumerate(ranks):
        if other is not None and other > rank:
            return index
    return len(ranks)


# ---------------------------------------------------------------------------------------------------
# catalog_sync
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncChange:
    """One difference between the catalog and the database.

    ``action``: ``update`` (a field the catalog owns), ``kept`` (an admin edit left alone),
    ``create`` (a new catalog model), ``retire`` (a model the catalog no longer lists, disabled).
    """

    provider: str
    action: str
    target: str  # "provider" or "model <id>"
    detail: str

    def __str__(self) -> str:
        sign = {"update": "~", "kept": "=", "create": "+", "retire": "-"}[self.action]
        return f"{sign} {self.provider}: {self.target}: {self.detail}"


def catalog_sync(
    *, apply: bool = False, slugs: Iterable[str] | None = None, progress: Callable[[str], None] | None = None
) -> list[SyncChange]:
    """Compare every catalog-managed provider with the catalog; with ``apply``, write the differences.

    Keys are never touched. Only providers added from the catalog are considered (``catalog_values``
    set); ``slugs`` narrows that further. Without ``apply`` nothing is written (a dry run).
    """
    entries = {entry.slug: entry for entry in catalog_providers()}
    wanted = set(slugs) if slugs is not None else None
    if wanted is not None and (unknown := wanted - set(entries)):
        raise CatalogError(f"not in the catalog: {', '.join(sorted(unknown))}")
    changes: list[SyncChange] = []
    providers = [p for p in Provider.objects.order_by("slug") if p.catalog_values and p.slug in entries]
    if wanted is not None:
        providers = [p for p in providers if p.slug in wanted]
    for index, provider in enumerate(providers, start=1):
        with transaction.atomic():
            found = _sync_provider(provider, entries[provider.slug], apply=apply)
        changes.extend(found)
        if progress:
            count = {0: "no differences", 1: "1 difference"}.get(len(found), f"{len(found)} differences")
            progress(f"[{index}/{len(providers)}] {provider.slug}: {count}")
    return changes


def _sync_provider(
    provider: Provider, entry: CatalogProvider, *, apply: bool, overrides: dict[str, Any] | None = None
) -> list[SyncChange]:
    """Three-way merge of one provider and its models: database value, value the catalog last wrote,
    value the catalog has now. ``overrides`` are admin choices applied over the catalog (add form)."""
    changes: list[SyncChange] = []
    record = dict(provider.catalog_values)
    new_values = catalog_provider_values(entry)
    provider_dirty: list[str] = []
    for name, new in new_values.items():
        verdict = _merge(getattr(provider, name), record.get(name, _UNSET), new)
        if verdict == "update":
            changes.append(
                SyncChange(provider.slug, "update", "provider", _describe(name, getattr(provider, name), new))
            )
            if apply:
                setattr(provider, name, new)
                provider_dirty.append(name)
        elif verdict == "kept":
            changes.append(
                SyncChange(
                    provider.slug,
                    "kept",
                    "provider",
                    f"{name}: kept {getattr(provider, name)!r} (catalog: {new!r})",
                )
            )
        record[name] = new
    for name, value in (overrides or {}).items():
        if getattr(provider, name) != value:
            changes.append(
                SyncChange(
                    provider.slug, "update", "provider", _describe(name, getattr(provider, name), value)
                )
            )
            if apply:
                setattr(provider, name, value)
                provider_dirty.append(name)

    created_ids: set[str] = set()
    known_ids = set(record.get(_MODEL_IDS, []))
    stored = {model.model_id: model for model in provider.models.all()}
    for catalog_model in entry.models:
        model = stored.get(catalog_model.id)
        if model is None:
            if catalog_model.id in known_ids:
                continue  # the catalog created it before and an admin deleted it: respect that
            changes.append(
                SyncChange(provider.slug, "create", f"model {catalog_model.id}", _joining(catalog_model))
            )
            if apply:
                UpstreamModel.objects.create(
                    provider=provider,
                    model_id=catalog_model.id,
                    catalog_values=_model_record(catalog_model),
                    **catalog_model_values(catalog_model),
                )
                created_ids.add(catalog_model.id)
            continue
        changes.extend(_sync_model(provider.slug, model, _model_record(catalog_model), apply=apply))
    catalog_ids = {m.id for m in entry.models}
    for model_id, model in stored.items():
        if model_id in catalog_ids or not model.catalog_values:
            continue
        changes.extend(
            _sync_model(
                provider.slug, model, {**model.catalog_values, "enabled": False}, apply=apply, retiring=True
            )
        )
    record[_MODEL_IDS] = sorted(known_ids | catalog_ids)

    if apply:
        provider.catalog_values = record
        provider.save(update_fields=[*dict.fromkeys(provider_dirty), "catalog_values", "updated_at"])
        if created_ids:
            for line in _place_models(provider, entry, only=created_ids):
                changes.append(SyncChange(provider.slug, "create", "chain", line))
    return changes


def _sync_model(
    slug: str, model: UpstreamModel, new_record: dict[str, Any], *, apply: bool, retiring: bool = False
) -> list[SyncChange]:
    changes: list[SyncChange] = []
    record = dict(model.catalog_values)
    dirty: list[str] = []
    target = f"model {model.model_id}"
    for name in MODEL_FIELDS:
        current = getattr(model, name)
        # A record written by an older catalog lacks the fields added since: nothing to say about those.
        new = new_record.get(name, current)
        verdict = _merge(current, record.get(name, _UNSET), new)
        if verdict == "update":
            if retiring and name == "enabled":
                changes.append(SyncChange(slug, "retire", target, "no longer in the catalog: disabled"))
            else:
                changes.append(SyncChange(slug, "update", target, _describe(name, current, new)))
            if apply:
                setattr(model, name, new)
                dirty.append(name)
        elif verdict == "kept":
            changes.append(SyncChange(slug, "kept", target, f"{name}: kept {current!r} (catalog: {new!r})"))
        record[name] = new
    record[_AUTO_RANK] = new_record.get(_AUTO_RANK)
    if apply and (dirty or record != model.catalog_values):
        model.catalog_values = record
        model.save(update_fields=[*dirty, "catalog_values"])
    return changes


def _merge(current: Any, last_written: Any, new: Any) -> str:
    """``same``: nothing to do; ``update``: the catalog's to change; ``kept``: an admin edit to keep."""
    if current == new:
        return "same"
    if last_written is _UNSET:
        # Never written by the catalog (adopted provider or model): the admin's value stands.
        return "kept"
    if new == last_written:
        return "same"  # the catalog did not change; the difference is an admin edit already kept
    if current == last_written:
        return "update"
    return "kept"


def _joining(model: CatalogModel) -> str:
    if model.kind == ModelKind.CHAT and model.auto_rank is not None:
        return f"new chat model, joins the {AUTO_CHAIN!r} chain (rank {model.auto_rank})"
    if model.kind == ModelKind.EMBEDDING:
        return f"new embedding model, joins the {embedding_chain_name(model.family)!r} chain"
    return f"new {model.kind} model"


def _describe(name: str, old: Any, new: Any) -> str:
    return f"{name}: {old!r} → {new!r}"
