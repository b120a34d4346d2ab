"""Writes for providers, keys, models and chains: declarative config import/export and key testing."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from .adapters import get_adapter
from .adapters.base import ErrorKind, Target, Timeouts, UpstreamError
from .adapters.transport import redact
from .config_schema import (
    AliasSpec,
    ChainSpec,
    ConfigError,
    ConfigSpec,
    ModelSpec,
    ProviderSpec,
    config_parse,
    config_sections,
)
from .models import (
    ChainEntry,
    ChainStrategy,
    FallbackChain,
    ModelAlias,
    ModelKind,
    Provider,
    ProviderKey,
    UpstreamModel,
    alias_target_stored,
)
from .netguard import guarded_async_client

# ---------------------------------------------------------------------------------------------------
# Declarative config (manage.py import_config / export_config)
# ---------------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did (or, for a dry run, would do): one line per change, secrets never included."""

    changes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def add(self, line: str) -> None:
        self.changes.append(line)


# The file, its parsed form and the resolved secrets stay out of error reports.
@sensitive_variables()
def config_import(
    *, data: Any, prune: bool = False, dry_run: bool = False, environ: Mapping[str, str] | None = None
) -> ImportReport:
    """Upsert providers, keys, models, chains and aliases from a loaded config file, all or nothing.

    Idempotent: importing the same file twice changes nothing the second time. What the file does not
    list is left alone unless ``prune``. Raises ``ConfigError`` (nothing written) when the file is wrong.
    """
    return config_apply(spec=config_parse(data), prune=prune, dry_run=dry_run, environ=environ)


@sensitive_variables()
def config_apply(
    *, spec: ConfigSpec, prune: bool = False, dry_run: bool = False, environ: Mapping[str, str] | None = None
) -> ImportReport:
    """``config_import`` of a parsed file (the provider catalog hands its entries, which are ProviderSpecs)."""
    environ = os.environ if environ is None else environ
    report = ImportReport(dry_run=dry_run)
    with transaction.atomic():
        secrets = _check_config(spec, prune=prune, environ=environ)
        models_by_route = {}
        for index, provider_spec in enumerate(spec.providers):
            models_by_route.update(_upsert_provider(provider_spec, secrets[index], prune=prune, report=report))
        if prune:
            for provider in Provider.objects.exclude(slug__in=[p.slug for p in spec.providers]):
                report.add(f"- provider {provider.slug} (with its keys and models)")
                provider.delete()
        for chain_spec in spec.chains:
            _upsert_chain(chain_spec, models_by_route, report=report)
        if prune:
            for chain in FallbackChain.objects.exclude(name__in=[c.name for c in spec.chains]):
                report.add(f"- chain {chain.name}")
                chain.delete()
        for position, alias_spec in enumerate(spec.aliases, start=1):
            _upsert_alias(alias_spec, position, report=report)
        if prune:
            for alias in ModelAlias.objects.exclude(pattern__in=[a.pattern for a in spec.aliases]):
                report.add(f"- alias {alias.pattern}")
                alias.delete()
        for name, value in spec.sections.items():
            config_sections[name].apply(value, prune=prune, report=report)
        if dry_run:
            transaction.set_rollback(True)
    return report


@sensitive_variables()
def _check_config(spec: ConfigSpec, *, prune: bool, environ: Mapping[str, str]) -> list[dict[str, str | None]]:
    """Checks that need the whole file or the database. Returns each provider's resolved secrets by label
    (None = keep the stored one). Raises ConfigError listing every problem."""
    problems: list[str] = []
    secrets: list[dict[str, str | None]] = []
    declared: dict[str, ModelSpec] = {}
    _duplicates(problems, "providers", [p.slug for p in spec.providers], "provider", "name")
    _duplicates(problems, "chains", [c.name for c in spec.chains], "chain", "name")
    for p_index, provider in enumerate(spec.providers):
        path = f"providers[{p_index}]"
        _duplicates(problems, f"{path}.keys", [k.label for k in provider.keys], "key label", "label")
        _duplicates(problems, f"{path}.models", [m.id for m in provider.models], "model id", "id")
        stored_labels = set(ProviderKey.objects.filter(provider__slug=provider.slug).values_list("label", flat=True))
        resolved: dict[str, str | None] = {}
        for k_index, key in enumerate(provider.keys):
            key_path = f"{path}.keys[{k_index}]"
            if key.secret is not None and key.secret_env is not None:
                problems.append(f"{key_path}: give either secret or secret_env, not both")
            elif key.secret_env is not None:
                value = environ.get(key.secret_env, "")
                if not value:
                    problems.append(f"{key_path}.secret_env: environment variable {key.secret_env} is not set")
                resolved[key.label] = value
            elif key.secret is not None:
                resolved[key.label] = key.secret
            elif key.label in stored_labels:
                resolved[key.label] = None
            else:
                problems.append(f"{key_path}: a new key needs secret or secret_env")
        secrets.append(resolved)
        for m_index, model in enumerate(provider.models):
            if model.kind == ModelKind.EMBEDDING and not model.family:
                problems.append(
                    f"{path}.models[{m_index}].family: required for embedding models "
                    "(vectors are only comparable within one family)"
                )
            declared[f"{provider.slug}/{model.id}"] = model
    for c_index, chain in enumerate(spec.chains):
        path = f"chains[{c_index}]"
        _duplicates(problems, f"{path}.models", chain.models, "model")
        embedding_routes: list[tuple[str, str]] = []
        for m_index, route in enumerate(chain.models):
            slug, sep, model_id = route.partition("/")
            if not sep or not slug or not model_id:
                problems.append(f"{path}.models[{m_index}]: {route!r} must look like <provider>/<model id>")
                continue
            model = declared.get(route)
            kind, family = (model.kind, model.family) if model else _stored_kind_family(slug, model_id, prune)
            if kind is None:
                problems.append(f"{path}.models[{m_index}]: unknown model {route!r} (not defined under providers)")
            elif kind != chain.kind:
                problems.append(f"{path}.models[{m_index}]: {route} has kind {kind}; chain {chain.name!r} has kind {chain.kind}")
            elif kind == ModelKind.EMBEDDING:
                embedding_routes.append((route, family))
        if conflict := embedding_family_conflict(embedding_routes):
            problems.append(f"{path}.models: {conflict}")
        if chain.fusion and chain.fusion.judge:
            judge = chain.fusion.judge
            slug, _, model_id = judge.partition("/")
            known = judge in declared or judge in {c.name for c in spec.chains} \
                or _stored_kind_family(slug, model_id, prune)[0] is not None \
                or (not prune and FallbackChain.objects.filter(name=judge).exists())
            if not known:
                problems.append(f"{path}.fusion.judge: unknown model {judge!r} (a provider/model or a chain)")
    _duplicates(problems, "aliases", [a.pattern for a in spec.aliases], "alias pattern", "pattern")
    chain_names = {c.name for c in spec.chains}
    for a_index, alias in enumerate(spec.aliases):
        if not _alias_target_known(alias.target, chain_names, declared, prune):
            problems.append(f"aliases[{a_index}].target: {alias.target!r} is neither a chain nor a "
                            "<provider>/<model id> defined under providers or chains")
    if problems:
        raise ConfigError(problems)
    return secrets


def _alias_target_known(target: str, chain_names: set[str], declared: Mapping[str, ModelSpec], prune: bool) -> bool:
    if target in chain_names or target in declared:
        return True
    # With --prune only what the file defines survives, so the database cannot satisfy a reference.
    return not prune and alias_target_stored(target)


def embedding_family_conflict(routes: Iterable[tuple[str, str]]) -> str | None:
    """Why a chain mixing embedding families is refused, naming each family once; None if it does not.

    ``routes`` are (route name, family) pairs of the chain's embedding models.
    """
    families: dict[str, str] = {}
    for route, family in routes:
        families.setdefault(family, route)
    if len(families) < 2:
        return None
    named = ", ".join(f"{family!r} ({route})" for family, route in families.items())
    return (
        "an embedding chain must use a single model family (vectors of different families are not "
        f"comparable); found {named}"
    )


def _duplicates(problems: list[str], path: str, values: list[str], what: str, attr: str | None = None) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            where = f"{path}[{index}]" + (f".{attr}" if attr else "")
            problems.append(f"{where}: duplicate {what} {value!r} (first at {path}[{seen[value]}])")
        else:
            seen[value] = index


def _stored_kind_family(slug: str, model_id: str, prune: bool) -> tuple[str | None, str]:
    # With --prune only what the file defines survives, so the database cannot satisfy a reference.
    if prune:
        return None, ""
    row = UpstreamModel.objects.filter(provider__slug=slug, model_id=model_id).values("kind", "family").first()
    return (row["kind"], row["family"]) if row else (None, "")


def _sync_fields(obj, wanted: dict[str, Any]) -> list[str]:
    changed = [name for name, value in wanted.items() if getattr(obj, name) != value]
    for name in changed:
        setattr(obj, name, wanted[name])
    return changed


def _upsert(model_cls, lookup: dict[str, Any], wanted: dict[str, Any], what: str, report: ImportReport):
    obj = model_cls.objects.filter(**lookup).first()
    if obj is None:
        obj = model_cls.objects.create(**lookup, **wanted)
        report.add(f"+ {what}")
        return obj
    changed = _sync_fields(obj, wanted)
    if changed:
        obj.save()
        report.add(f"~ {what}: {', '.join(changed)}")
    return obj


@sensitive_variables()
def _upsert_provider(
    spec: ProviderSpec, secrets: dict[str, str | None], *, prune: bool, report: ImportReport
) -> dict[str, UpstreamModel]:
    provider = _upsert(Provider, {"slug": spec.slug}, spec.db_values(), f"provider {spec.slug}", report)
    for key_spec in spec.keys:
        what = f"key {spec.slug}/{key_spec.label}"
        secret = secrets[key_spec.label]
        key = ProviderKey.objects.filter(provider=provider, label=key_spec.label).first()
        if key is None:
            ProviderKey.objects.create(
                provider=provider, label=key_spec.label, secret=secret, enabled=key_spec.enabled,
                proxy=key_spec.proxy or "",
            )
            report.add(f"+ {what}")
            continue
        wanted: dict[str, Any] = {"enabled": key_spec.enabled}
        if secret is not None:
            wanted["secret"] = secret
        if key_spec.proxy is not None:
            wanted["proxy"] = key_spec.proxy
        changed = _sync_fields(key, wanted)
        if changed:
            key.save()
            report.add(f"~ {what}: {', '.join(changed)}")
    models = {}
    for model_spec in spec.models:
        route_name = f"{spec.slug}/{model_spec.id}"
        model = _upsert(
            UpstreamModel,
            {"provider": provider, "model_id": model_spec.id},
            model_spec.db_values(),
            f"model {route_name}",
            report,
        )
        models[route_name] = model
    if prune:
        for key in provider.keys.exclude(label__in=[k.label for k in spec.keys]):
            report.add(f"- key {spec.slug}/{key.label}")
            key.delete()
        for model in provider.models.exclude(model_id__in=[m.id for m in spec.models]):
            report.add(f"- model {spec.slug}/{model.model_id}")
            model.delete()
    return models


def _upsert_chain(spec: ChainSpec, models_by_route: dict[str, UpstreamModel], *, report: ImportReport) -> None:
    created = not FallbackChain.objects.filter(name=spec.name).exists()
    chain = _upsert(
        FallbackChain,
        {"name": spec.name},
        spec.db_values(),
        f"chain {spec.name}",
        report,
    )
    wanted = []
    for route in spec.models:
        model = models_by_route.get(route)
        if model is None:
            slug, _, model_id = route.partition("/")
            model = UpstreamModel.objects.get(provider__slug=slug, model_id=model_id)
        wanted.append(model.pk)
    current = list(chain.entries.order_by("position").values_list("model_id", flat=True))
    if current != wanted:
        chain.entries.all().delete()
        for position, model_pk in enumerate(wanted, start=1):
            ChainEntry.objects.create(chain=chain, model_id=model_pk, position=position)
        if not created:
            report.add(f"~ chain {spec.name}: models → {', '.join(spec.models)}")


def _upsert_alias(spec: AliasSpec, position: int, *, report: ImportReport) -> None:
    # The file's order is the matching order.
    _upsert(
        ModelAlias,
        {"pattern": spec.pattern},
        {"target": spec.target, "position": position, "enabled": spec.enabled},
        f"alias {spec.pattern}",
        report,
    )


@sensitive_variables()
def config_export(*, with_secrets: bool = False) -> dict[str, Any]:
    """Everything import_config reads, in the same format; secrets only when asked for."""
    providers = []
    for provider in Provider.objects.prefetch_related("keys", "models"):
        item: dict[str, Any] = {"name": provider.slug}
        if provider.name != provider.slug:
            item["display_name"] = provider.name
        item["adapter"] = provider.adapter
        item["base_url"] = provider.base_url
        _put_if(item, "headers", provider.headers)
        _put_if(item, "enabled", provider.enabled, default=True)
        _put_if(item, "keyless", provider.keyless, default=False)
        _put_if(item, "drop_params", provider.drop_params)
        _put_if(item, "account_rpm", provider.account_rpm)
        _put_if(item, "account_rpd", provider.account_rpd)
        _put_if(item, "daily_reset_tz", provider.daily_reset_tz, default="UTC")
        _put_proxy(item, provider.proxy, with_secrets)
        keys = []
        for key in provider.keys.all():
            key_item: dict[str, Any] = {"label": key.label}
            # An empty secret hides nothing; writing it keeps the round trip lossless.
            if with_secrets or not key.secret:
                key_item["secret"] = key.secret
            _put_proxy(key_item, key.proxy, with_secrets)
            _put_if(key_item, "enabled", key.enabled, default=True)
            keys.append(key_item)
        item["keys"] = keys
        item["models"] = [_export_model(model) for model in provider.models.all()]
        providers.append(item)
    chains = []
    for chain in FallbackChain.objects.prefetch_related("entries__model__provider"):
        chain_item: dict[str, Any] = {"name": chain.name, "kind": chain.kind}
        _put_if(chain_item, "strategy", chain.strategy, default=ChainStrategy.PRIORITY)
        _put_if(chain_item, "description", chain.description)
        _put_if(chain_item, "enabled", chain.enabled, default=True)
        _put_if(chain_item, "cache_ttl", chain.cache_ttl, default=0)
        _put_if(chain_item, "cache_shared", chain.cache_shared, default=False)
        _put_if(chain_item, "fusion", chain.fusion)
        chain_item["models"] = [entry.model.route_name for entry in chain.entries.all()]
        chains.append(chain_item)
    aliases = []
    for alias in ModelAlias.objects.all():
        alias_item: dict[str, Any] = {"pattern": alias.pattern, "target": alias.target}
        _put_if(alias_item, "enabled", alias.enabled, default=True)
        aliases.append(alias_item)
    exported: dict[str, Any] = {"providers": providers, "chains": chains, "aliases": aliases}
    for name, section in config_sections.items():
        if value := section.export():
            exported[name] = value
    return exported


def _export_model(model: UpstreamModel) -> dict[str, Any]:
    item: dict[str, Any] = {"id": model.model_id, "kind": model.kind}
    _put_if(item, "family", model.family)
    _put_if(item, "canonical", model.canonical)
    _put_if(item, "dimensions", model.dimensions)
    _put_if(item, "context_window", model.context_window)
    _put_if(item, "tools", model.supports_tools, default=False)
    _put_if(item, "vision", model.supports_vision, default=False)
    _put_if(item, "json", model.supports_json, default=False)
    _put_if(item, "fim", model.supports_fim, default=False)
    limits = {name: getattr(model, name) for name in ("rpm", "rpd", "tpm", "tpd") if getattr(model, name) is not None}
    _put_if(item, "limits", limits)
    _put_if(item, "enabled", model.enabled, default=True)
    return item


def _put_proxy(item: dict[str, Any], proxy: str, with_secrets: bool) -> None:
    """A proxy URL is exported like a secret when it carries credentials (left out: import keeps it)."""
    if proxy and (with_secrets or not proxy_has_credentials(proxy)):
        item["proxy"] = proxy


def proxy_has_credentials(proxy: str) -> bool:
    parts = urlsplit(proxy)
    return bool(parts.username or parts.password)


def _put_if(item: dict[str, Any], name: str, value: Any, default: Any = None) -> None:
    """Leave defaults out so exported files stay as short as hand-written ones."""
    if value == default or (default is None and value in ("", [], {})):
        return
    item[name] = value


# ---------------------------------------------------------------------------------------------------
# Key testing (admin action "test key now")
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyTestResult:
    ok: bool | None  # True: the key works; False: upstream rejected it; None: inconclusive
    detail: str
    # The call's failure, if any, for callers that report the outcome to the quota store (health probes).
    error: UpstreamError | None = field(default=None, repr=False, compare=False)


@sensitive_variables()
def provider_key_test(*, key: ProviderKey) -> KeyTestResult:
    """One real, cheap upstream call with ``key`` (a 1-token chat, else an embedding).

    Sets ``status`` to ACTIVE or INVALID with a short detail; an inconclusive outcome (timeout, 5xx,
    unknown model) keeps the status and only records the detail. The detail never holds the secret.
    """
    provider = key.provider
    model = provider_key_test_model(provider)
    if model is None:
        result = KeyTestResult(None, "no enabled chat or embedding model to test with")
        _save_key_status(key, None, result.detail)
        return result
    secret = key.secret or None
    target = Target(
        provider=provider.slug,
        base_url=provider.base_url,
        model=model.model_id,
        api_key=secret,
        key_label=key.label,
        headers=dict(provider.headers or {}),
        drop_params=frozenset(provider.drop_params or ()),
        proxy=key.proxy or provider.proxy or "",
    )
    timeouts = Timeouts(
        connect=settings.FREELLM_CONNECT_TIMEOUT,
        first_token=min(settings.FREELLM_FIRST_TOKEN_TIMEOUT, 30.0),
        idle=settings.FREELLM_IDLE_TIMEOUT,
    )
    try:
        adapter = get_adapter(provider.adapter)
    except KeyError:
        result = KeyTestResult(None, f"no {provider.adapter!r} adapter installed to test with")
        _save_key_status(key, None, result.detail)
        return result
    try:
        async_to_sync(_probe)(adapter, target, model.kind, timeouts)
    except UpstreamError as exc:
        message = _scrub(exc.message, secret)
        status = f" ({exc.status})" if exc.status else ""
        if exc.kind == ErrorKind.AUTH:
            result = KeyTestResult(False, f"rejected by {model.route_name}{status}: {message}", exc)
            _save_key_status(key, ProviderKey.Status.INVALID, result.detail)
        elif exc.kind == ErrorKind.RATE_LIMITED:
            # A 429 comes after authentication: the key is good, just busy.
            result = KeyTestResult(True, f"accepted by {model.route_name}, rate limited right now{status}", exc)
            _save_key_status(key, ProviderKey.Status.ACTIVE, result.detail)
        else:
            result = KeyTestResult(None, f"inconclusive: {model.route_name} {exc.kind}{status}: {message}", exc)
            _save_key_status(key, None, result.detail)
        return result
    except httpx.HTTPError as exc:
        kind = ErrorKind.TIMEOUT if isinstance(exc, httpx.TimeoutException) else ErrorKind.CONNECTION
        result = KeyTestResult(None, f"inconclusive: {model.route_name} {type(exc).__name__}",
                               UpstreamError(kind, type(exc).__name__))
        _save_key_status(key, None, result.detail)
        return result
    result = KeyTestResult(True, f"OK: {model.route_name} answered")
    _save_key_status(key, ProviderKey.Status.ACTIVE, result.detail)
    return result


def provider_key_test_model(provider: Provider) -> UpstreamModel | None:
    """The model ``provider_key_test`` calls."""
    models = provider.models.filter(enabled=True).order_by("model_id")
    return models.filter(kind=ModelKind.CHAT).first() or models.filter(kind=ModelKind.EMBEDDING).first()


async def _probe(adapter, target, kind: str, timeouts) -> None:
    async with guarded_async_client(proxy=target.proxy or None) as client:
        if kind == ModelKind.CHAT:
            request = {"model": target.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            await adapter.chat(client, target, request, timeouts)
        else:
            await adapter.embeddings(client, target, {"model": target.model, "input": "ping"}, timeouts)


def _scrub(message: str, secret: str | None) -> str:
    # Some providers echo the key they refused, whole or in part; never store it.
    return " ".join(redact(message, secret).split())[:200]


def _save_key_status(key: ProviderKey, status: str | None, detail: str) -> None:
    fields = ["status_detail"]
    key.status_detail = detail[:300]
    if status is not None:
        key.status = status
        fields.append("status")
    key.save(update_fields=fields)


def provider_key_status_reset(*, keys: Iterable[ProviderKey], detail: str) -> int:
    """Back to UNKNOWN (e.g. an admin cleared a key marked invalid): the routing config takes the keys in
    again (post_save bumps it) and the next call or probe decides. Returns the keys reset."""
    count = 0
    for key in keys:
        _save_key_status(key, ProviderKey.Status.UNKNOWN, detail)
        count += 1
    return count


def provider_set_enabled(*, providers: Iterable[Provider], enabled: bool) -> int:
    return _set_enabled(providers, enabled)


def provider_key_set_enabled(*, keys: Iterable[ProviderKey], enabled: bool) -> int:
    return _set_enabled(keys, enabled)


def upstream_model_set_enabled(*, models: Iterable[UpstreamModel], enabled: bool) -> int:
    return _set_enabled(models, enabled)


def _set_enabled(objects: Iterable, enabled: bool) -> int:
    # save() per row (not queryset.update) so post_save bumps the routing config for each.
    count = 0
    for obj in objects:
        if obj.enabled != enabled:
            obj.enabled = enabled
            obj.save(update_fields=["enabled"])
            count += 1
    return count


# --- what the router learns about a key while serving ----------------------------------------------


def provider_key_mark_invalid(*, key_id: int, detail: str) -> None:
    """The provider refused the key (401/403) while serving: the router leaves it out from now on.

    A queryset update, so no post_save: the caller bumps the routing config itself, once.
    """
    ProviderKey.objects.filter(id=key_id).update(status=ProviderKey.Status.INVALID, status_detail=detail[:300])


async def provider_keys_touch(*, key_ids: list[int]) -> None:
    """Stamp these keys' last use, in one UPDATE (for people: the caller decides how often)."""
    from django.utils import timezone

    if key_ids:
        await ProviderKey.objects.filter(id__in=key_ids).aupdate(last_used_at=timezone.now())
