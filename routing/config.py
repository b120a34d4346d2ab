"""The routing config (providers, keys, models, chains, aliases) as an immutable in-process snapshot.

The hot path never queries the database for it: the snapshot is rebuilt only when the config version
changes. Every save/delete of a provider, key, model, chain or alias bumps the version (routing/signals.py),
in Redis when REDIS_URL is set (shared by all gateway processes) or in a file under var/ for the embedded
default (shared by daphne, the worker and manage.py commands). Processes look at the version at most
once per CHECK_INTERVAL seconds.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from providers.adapters.base import Target
from routing.loops import OneAtATime
from routing.quota.base import Limits, Route
from routing.redis import REDIS_ERRORS, RedisBreaker, redis_client

_CACHE_KEY = "freellm:config-version"
CHECK_INTERVAL = 1.0
UNKNOWN_VERSION = "unknown"

log = logging.getLogger(__name__)

# Redis down (degraded mode): the shared version can be neither read nor bumped; requests go on with the
# snapshot each process has. A process whose bump failed bumps again as soon as Redis answers (it may come
# back with its data, still holding the old version); an empty Redis's "0" differs from every snapshot too.
# CHECK_INTERVAL already spaces the reads out, so the breaker retries on every one (retry_interval 0).
_breaker = RedisBreaker(
    log=log,
    down="routing config: Redis unavailable (%(error)s); each gateway process keeps its snapshot, and changes "
    "reach the other processes when it returns",
    back="routing config: Redis is back; config changes are shared again",
    retry_interval=0.0,
)


def _version_file():
    return settings.VAR_DIR / "config-version"


def bump_config_version() -> None:
    version = time.time_ns()
    if settings.REDIS_URL:
        try:
            # An int: Django's Redis cache stores it as plain digits, which current_config_version reads
            # with the gateway's own async client (a pickled str would not decode there).
            cache.set(_CACHE_KEY, version, timeout=None)
        except REDIS_ERRORS as exc:
            # The change is in the database; this process reloads now, the others once Redis is back.
            _breaker.failed(exc)
            log.info("routing config changed while Redis is unavailable; announced when it returns")
            _state.config = None
            _state.bump_pending = True
            return
        _breaker.worked()
        _state.bump_pending = False
    else:
        _version_file().write_text(str(version))
    # This process need not wait for the next check.
    _state.checked_at = 0.0


async def current_config_version() -> str | None:
    """The shared version; None when it cannot be read (Redis down).

    Read on the event loop with the gateway's pooled client (routing.redis): Django's cache would mean a thread
    hop and, its client being per context, a new Redis connection for every check."""
    if settings.REDIS_URL:
        try:
            version = await redis_client(settings.REDIS_URL).get(cache.make_key(_CACHE_KEY)) or "0"
        except UnicodeDecodeError:
            # Pickled by an earlier release: a version like any other until the next bump rewrites it.
            version = "pickled"
        except REDIS_ERRORS as exc:
            _breaker.failed(exc)
            return None
        _breaker.worked()
        return version
    try:
        return _version_file().read_text()
    except FileNotFoundError:
        return "0"


@dataclass(frozen=True)
class ProviderInfo:
    slug: str
    adapter: str
    base_url: str
    headers: tuple[tuple[str, str], ...]
    drop_params: frozenset[str]
    keyless: bool
    limits: Limits  # provider-wide rpm/rpd
    daily_reset_tz: str
    proxy: str = field(default="", repr=False)  # outbound proxy URL for every key without its own


@dataclass(frozen=True)
class KeyInfo:
    id: int | None  # None for the implicit key of a keyless provider
    label: str
    secret: str = field(repr=False)
    proxy: str = field(default="", repr=False)  # this key's outbound proxy (overrides the provider's)


@dataclass(frozen=True)
class ModelInfo:
    id: int
    provider: ProviderInfo
    model_id: str
    kind: str
    family: str
    dimensions: int | None
    context_window: int | None
    supports_tools: bool
    supports_vision: bool
    supports_json: bool
    limits: Limits
    keys: tuple[KeyInfo, ...]
    canonical: str = ""  # the cross-provider id ("" when not set)
    supports_fim: bool = False  # served on /fim/completions (fill in the middle) as well

    @property
    def name(self) -> str:
        return f"{self.provider.slug}/{self.model_id}"

    def route(self, key: KeyInfo) -> Route:
        p = self.provider
        return Route(p.slug, self.model_id, key.label, self.limits, p.limits, p.daily_reset_tz)

    def target(self, key: KeyInfo) -> Target:
        p = self.provider
        return Target(
            provider=p.slug,
            base_url=p.base_url,
            model=self.model_id,
            api_key=key.secret or None,
            key_label=key.label,
            headers=dict(p.headers),
            drop_params=p.drop_params,
            proxy=key.proxy or p.proxy,
        )


@dataclass(frozen=True)
class ChainInfo:
    name: str
    kind: str
    models: tuple[ModelInfo, ...]
    strategy: str = "priority"  # providers.models.ChainStrategy
    cache_ttl: int = 0  # seconds deterministic answers are cached (routing/cache.py); 0 = never
    cache_shared: bool = False  # one cache for every user instead of one per user
    fusion: dict = field(default_factory=dict)  # strategy fusion: panel, judge, mode (routing/fusion.py)


@dataclass(frozen=True)
class AliasInfo:
    pattern: str  # fnmatch pattern, matched case-sensitively against the requested name
    target: str  # a chain name or a provider/model route

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class RoutingConfig:
    version: str
    chains: dict[str, ChainInfo]
    by_name: dict[str, ModelInfo]  # "provider/model_id"
    by_model_id: dict[str, tuple[ModelInfo, ...]]  # bare upstream id → every provider serving it
    # canonical id → every provider's spelling of it: in the order they first appear in the chains (the
    # catalog ranks them there), then the rest in the order they were added.
    by_canonical: dict[str, tuple[ModelInfo, ...]] = field(default_factory=dict)
    aliases: tuple[AliasInfo, ...] = ()  # in order: the first that matches a name nothing else knows wins

    @property
    def models(self) -> tuple[ModelInfo, ...]:
        return tuple(self.by_name.values())


def model_infos(keys_by_provider: Mapping[int, Sequence[KeyInfo]]) -> list[ModelInfo]:
    """Every enabled model of an enabled provider, with its keys from ``keys_by_provider`` (provider id →
    keys; a keyless provider without any gets its implicit key). The one reading of models into routes."""
    from providers.models import UpstreamModel

    providers: dict[int, ProviderInfo] = {}
    models: list[ModelInfo] = []
    for m in UpstreamModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider"):
        p = m.provider
        if p.id not in providers:
            providers[p.id] = ProviderInfo(
                slug=p.slug,
                adapter=p.adapter,
                base_url=p.base_url.rstrip("/"),
                headers=tuple(sorted((str(k), str(v)) for k, v in (p.headers or {}).items())),
                drop_params=frozenset(p.drop_params or ()),
                keyless=p.keyless,
                limits=Limits(rpm=p.account_rpm, rpd=p.account_rpd),
                daily_reset_tz=p.daily_reset_tz or "UTC",
                proxy=p.proxy,
            )
        keys = list(keys_by_provider.get(p.id, ()))
        if not keys and p.keyless:
            keys = [KeyInfo(None, "", "")]
        models.append(
            ModelInfo(
                id=m.id,
                provider=providers[p.id],
                model_id=m.model_id,
                kind=m.kind,
                family=m.family,
                dimensions=m.dimensions,
                context_window=m.context_window,
                supports_tools=m.supports_tools,
                supports_vision=m.supports_vision,
                supports_json=m.supports_json,
                supports_fim=m.supports_fim,
                limits=Limits(rpm=m.rpm, rpd=m.rpd, tpm=m.tpm, tpd=m.tpd),
                keys=tuple(keys),
                canonical=m.canonical,
            )
        )
    return models


def load_routing_config(version: str = "") -> RoutingConfig:
    """Build the snapshot of everything enabled. Keys that failed auth are left out."""
    from providers.models import FallbackChain, ModelAlias, ProviderKey

    keys_by_provider: dict[int, list[KeyInfo]] = defaultdict(list)
    for key in ProviderKey.objects.filter(enabled=True, provider__enabled=True).exclude(
        status=ProviderKey.Status.INVALID
    ):
        keys_by_provider[key.provider_id].append(KeyInfo(key.id, key.label, key.secret, key.proxy))

    by_name: dict[str, ModelInfo] = {}
    by_model_id: dict[str, list[ModelInfo]] = defaultdict(list)
    for info in model_infos(keys_by_provider):
        by_name[info.name] = info
        by_model_id[info.model_id].append(info)

    chains: dict[str, ChainInfo] = {}
    for chain in FallbackChain.objects.filter(enabled=True).prefetch_related("entries__model__provider"):
        members = tuple(
            by_name[e.model.route_name] for e in chain.entries.all() if e.model.route_name in by_name
        )
        chains[chain.name] = ChainInfo(chain.name, chain.kind, members, chain.strategy, cache_ttl=chain.cache_ttl,
                                       cache_shared=chain.cache_shared, fusion=dict(chain.fusion or {}))
    aliases = tuple(AliasInfo(a.pattern, a.target) for a in ModelAlias.objects.filter(enabled=True))
    return RoutingConfig(version, chains, by_name, {k: tuple(v) for k, v in by_model_id.items()},
                         _by_canonical(by_name.values(), chains.values()), aliases)


def _by_canonical(models: Iterable[ModelInfo], chains: Iterable[ChainInfo]) -> dict[str, tuple[ModelInfo, ...]]:
    rank: dict[str, int] = {}
    for chain in chains:
        for member in chain.models:
            rank.setdefault(member.name, len(rank))
    groups: dict[str, list[ModelInfo]] = defaultdict(list)
    for model in sorted(models, key=lambda m: (rank.get(m.name, len(rank)), m.id)):
        if model.canonical:
            groups[model.canonical].append(model)
    return {name: tuple(members) for name, members in groups.items()}


class _State:
    config: RoutingConfig | None = None
    checked_at: float = 0.0
    bump_pending: bool = False  # a bump failed (Redis down): repeat it once Redis answers


_state = _State()
_loading: OneAtATime[None] = OneAtATime()  # the load in progress, tagged with the version it loads


async def get_routing_config() -> RoutingConfig:
    now = time.monotonic()
    cfg = _state.config
    if cfg is not None and now - _state.checked_at < CHECK_INTERVAL:
        return cfg
    if cfg is not None:
        # One check at a time: the requests that come while it runs go on with the snapshot, instead of each
        # request in flight when the interval ended making a check of its own (dozens a second at c=128).
        _state.checked_at = now
    version = await current_config_version()
    if version is not None and _state.bump_pending:
        await sync_to_async(bump_config_version)()
        version = await current_config_version()
    _state.checked_at = now
    if cfg is not None and (cfg.version == version or version is None):
        return cfg
    if version is None:
        version = UNKNOWN_VERSION
    # One load at a time: a process that starts under load has every request in flight without a snapshot,
    # and each would rebuild it (a set of queries apiece, queued on the one sync thread).
    loading = _loading.task(None, version, lambda: sync_to_async(load_routing_config)(version))
    _state.config = await asyncio.shield(loading)
    return _state.config


def invalidate_local_config() -> None:
    _state.config = None
    _state.checked_at = 0.0
    _loading.clear()
    _state.bump_pending = False
    _breaker.reset()
