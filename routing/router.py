"""The router, a short pipeline read top to bottom:

    resolve     the requested name → the ordered models that may serve it (chain, provider/model, bare id,
                else the first alias pattern that matches it)
    candidates  each model's usable keys, most quota headroom first, rotating among equals
    reserve     atomically take the request + estimated tokens from the quota store (refused while cooling)
    call        the adapter does the HTTP call (streams: until the first content chunk; plain chat: the whole
                answer, read from an upstream stream)
    settle      real usage back to the quota store, the outcome to the circuit breaker

Fails over on 429, 5xx, timeouts and connection errors, up to FREELLM_MAX_ATTEMPTS calls and within
FREELLM_TIME_BUDGET seconds. A request the upstream calls bad goes straight back to the client.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from providers.adapters import get_adapter
from providers.adapters.base import Adapter, ErrorKind, Target, Timeouts, UpstreamError, Usage
from providers.adapters.transport import redact
from providers.models import ChainStrategy as Strategy
from routing import metrics, strategies
from routing.config import KeyInfo, ModelInfo, RoutingConfig
from routing.errors import GatewayError
from routing.gating import context_overflow_error, is_context_reason
from routing.http import default_timeouts
from routing.loops import OneAtATime
from routing.quota import get_quota_store
from routing.quota.base import Denied, DenyReason, Lease, Route
from routing.redis import REDIS_ERRORS, redis_client
from routing.stats import FAILURE_KINDS, get_stats_store
from routing.strategies import SUFFIXES

log = logging.getLogger(__name__)

# attempt(adapter, target, timeouts) → whatever the endpoint needs (a response, a primed stream, ...)
AttemptFn = Callable[[Adapter, Target, Timeouts], Awaitable[Any]]

class StepGroup(StrEnum):
    """What a trail line means for the client: counted in the "all routes exhausted" message and
    deciding its status (429 when only waiting helps, 422 when no model can serve, 502/503/504 else)."""

    RATE_LIMITED = "rate-limited"
    COOLING_DOWN = "cooling down"
    KEY_INVALID = "key invalid"
    FAILING = "failing"
    TIMED_OUT = "timed out"
    MODEL_UNAVAILABLE = "model unavailable"
    CONTEXT_TOO_SMALL = "context too small"
    NOT_CAPABLE = "not capable"
    UNAVAILABLE = "unavailable"


# Waiting helps these (Retry-After): the route comes back by itself.
_TEMPORARY = frozenset({StepGroup.RATE_LIMITED, StepGroup.COOLING_DOWN})
_DENIAL_GROUPS = {
    DenyReason.RPM: StepGroup.RATE_LIMITED,
    DenyReason.RPD: StepGroup.RATE_LIMITED,
    DenyReason.TPM: StepGroup.RATE_LIMITED,
    DenyReason.TPD: StepGroup.RATE_LIMITED,
    DenyReason.PROVIDER_RPM: StepGroup.RATE_LIMITED,
    DenyReason.PROVIDER_RPD: StepGroup.RATE_LIMITED,
    DenyReason.COOLDOWN: StepGroup.COOLING_DOWN,
    DenyReason.HALF_OPEN: StepGroup.COOLING_DOWN,
    DenyReason.KEY_INVALID: StepGroup.KEY_INVALID,
}
_ERROR_GROUPS = {
    ErrorKind.RATE_LIMITED: StepGroup.RATE_LIMITED,
    ErrorKind.SERVER: StepGroup.FAILING,
    ErrorKind.CONNECTION: StepGroup.FAILING,
    ErrorKind.EMPTY: StepGroup.FAILING,
    ErrorKind.TIMEOUT: StepGroup.TIMED_OUT,
    ErrorKind.AUTH: StepGroup.KEY_INVALID,
    ErrorKind.NOT_FOUND: StepGroup.MODEL_UNAVAILABLE,
    ErrorKind.CONTEXT_LENGTH: StepGroup.CONTEXT_TOO_SMALL,
}


@dataclass
class Step:
    """One line of the trail: a route that was called, or skipped without calling it."""

    route: Route
    outcome: str  # "ok", "cancelled", "error", an ErrorKind value, or "skipped:<reason>"
    called: bool
    group: StepGroup | None = None  # None: the call answered (or the client left)
    retry_after: float | None = None
    ms: int = 0
    reason: str = ""  # skipped: the DenyReason, or what the model lacks (gating)
    window: int | None = None  # the model's context window, on the steps that found it too small

    @classmethod
    def skipped(cls, route: Route, reason: str, group: StepGroup, retry_after: float | None = None, *,
                window: int | None = None) -> Step:
        return cls(route, f"skipped:{reason}", False, group, retry_after, reason=reason, window=window)

    def __str__(self) -> str:
        return f"{self.route} -> {self.outcome}"


@dataclass
class RequestContext:
    kind: str  # chat | embedding | image | transcription | speech
    requested: str  # `model` as the client sent it
    est_tokens: int  # prompt estimate + output reserve, what reserve() takes
    stream: bool = False  # the client asked for a stream (chat), for the request log
    prompt_tokens: int = 0  # prompt estimate alone, for streams that end without usage
    context_tokens: int = 0  # what the request needs of a context window (gating's estimate); 0: est_tokens
    session_id: str = ""  # the sticky-session key (routing.continuity), for the request log
    chain: str = ""  # the chain the requested name resolved to ("" for a model), for X-FreeLLM-Chain
    alias: str = ""  # the alias pattern that resolved it, for X-FreeLLM-Alias
    switched: str = ""  # "old → new: reason" when another model took the session over
    started: float = field(default_factory=time.monotonic)
    trail: list[Step] = field(default_factory=list)
    # The client's unified key: blanked with the provider key from upstream error text (transport.redact).
    client_key: str | None = field(default=None, repr=False)
    api_key_id: int | None = None  # whose request it is: one client's 5xx count once per window
    # Returned as X-FreeLLM-Request-Id and kept in the request log, to look a request up later.
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    first_byte_at: float | None = None  # streams: when the answer's first byte went to the client
    # The attempt's first content from upstream (set by the caller's attempt function), for route stats.
    first_token_at: float | None = None
    strategy: str = ""  # how the chain was ordered, for X-FreeLLM-Strategy
    cache: str = ""  # the response cache's verdict, for X-FreeLLM-Cache: hit | miss ("": not cached)

    @property
    def attempts(self) -> int:
        return sum(1 for s in self.trail if s.called)

    def remaining(self) -> float:
        return settings.FREELLM_TIME_BUDGET - (time.monotonic() - self.started)

    def trail_header(self) -> str:
        return ", ".join(str(s) for s in self.trail)


@dataclass
class Served:
    """A successful call, not yet settled (streams settle when they end)."""

    model: ModelInfo
    key: KeyInfo
    route: Route
    lease: Lease
    result: Any
    settled: bool = False
    began: float = 0.0  # monotonic: the successful call started
    first_token_at: float | None = None  # its first content (None: the whole answer came at once)


# --- resolve ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    models: tuple[ModelInfo, ...]
    chain: str | None  # the chain name when the client asked for one (or an alias pointing at one)
    explicit: bool  # provider/model or a bare id: no stickiness, no silent reroute to other models
    strategy: Strategy = Strategy.PRIORITY
    alias: str | None = None  # the alias pattern the requested name matched, when it was resolved by one


def resolve(cfg: RoutingConfig, name: str, kind: str) -> Resolution:
    """The models that may serve ``name``: a chain, a provider/model, a canonical id (the same model at every
    provider that has it, like a chain of them) or a bare upstream id; ``name:fast`` and the like pick a
    strategy for a chain or a canonical id. A name none of these knows goes by the first alias whose pattern
    matches it (its target: a chain or a provider/model)."""
    if _known(cfg, name):
        return _resolve_known(cfg, name, kind)
    alias = next((a for a in cfg.aliases if a.matches(name)), None)
    if alias is None:
        raise GatewayError(404, f"The model '{name}' does not exist or is disabled", code="model_not_found",
                           param="model")
    if not _known(cfg, alias.target):
        raise GatewayError(404, f"The model '{name}' matches the alias '{alias.pattern}', whose target "
                                f"'{alias.target}' does not exist or is disabled", code="model_not_found",
                           param="model")
    return replace(_resolve_known(cfg, alias.target, kind), alias=alias.pattern)


def _known(cfg: RoutingConfig, name: str) -> bool:
    if name in cfg.chains or name in cfg.by_name or name in cfg.by_model_id or name in cfg.by_canonical:
        return True
    prefix, _, suffix = name.rpartition(":")
    return suffix in SUFFIXES and (prefix in cfg.chains or prefix in cfg.by_canonical)


def _resolve_known(cfg: RoutingConfig, name: str, kind: str) -> Resolution:
    base, strategy = name, None
    if name not in cfg.chains and name not in cfg.by_name and name not in cfg.by_model_id \
            and name not in cfg.by_canonical:
        prefix, _, suffix = name.rpartition(":")
        base, strategy = prefix, SUFFIXES[suffix]
    if chain := cfg.chains.get(base):
        if chain.kind != kind:
            raise GatewayError(400, f"'{name}' is a {chain.kind} chain; it cannot serve {kind} requests",
                               code="model_kind_mismatch", param="model")
        return Resolution(chain.models, chain.name, explicit=False, strategy=strategy or Strategy(chain.strategy))
    if base in cfg.by_canonical and base not in cfg.by_name:
        models = cfg.by_canonical[base]
        _check_kind(name, models, kind)
        return Resolution(tuple(m for m in models if m.kind == kind), None, explicit=False,
                          strategy=strategy or Strategy.PRIORITY)
    models = (cfg.by_name[base],) if base in cfg.by_name else cfg.by_model_id[base]
    _check_kind(name, models, kind)
    return Resolution(tuple(m for m in models if m.kind == kind), None, explicit=True)


def _check_kind(name: str, models: tuple[ModelInfo, ...], kind: str) -> None:
    if all(m.kind != kind for m in models):
        raise GatewayError(400, f"'{name}' is a {models[0].kind} model; it cannot serve {kind} requests",
                           code="model_kind_mismatch", param="model")


# --- arrange: the chain's strategy orders its members ------------------------------------------------


async def arrange(ctx: RequestContext, resolution: Resolution) -> Resolution:
    """Order the resolved models by the chain's strategy (the trail's X-FreeLLM-Strategy says how)."""
    if resolution.strategy == Strategy.PRIORITY or len(resolution.models) < 2:
        return resolution
    ordering = await strategies.order(resolution.models, resolution.strategy, stats_store=get_stats_store(),
                                      quota_store=get_quota_store())
    ctx.strategy = ordering.header()
    return replace(resolution, models=ordering.models)


# --- candidates ------------------------------------------------------------------------------------

# The provider's trouble for this model, not the key's: its sibling keys would fail the same way.
PROVIDER_FAILURES = frozenset({ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION})
PROVIDER_DOWN = "provider_down"  # the trail's reason for the keys and models skipped because of one

_rotation = itertools.count()


# A model's keys in headroom tiers (most first), read for all its keys in batched quota-store calls and kept
# for HEADROOM_SECONDS. Headroom only orders the keys (reserve is still exact: a key that ran out is refused
# there and the next one tried), so the view spares a round trip per key and request, and a model with a
# thousand keys costs one batched read a second instead of a thousand reads a request.
HEADROOM_SECONDS = 1.0
# A model with many keys is read again in slices of this many, spread over half of HEADROOM_SECONDS: the read
# costs the event loop about 33 µs a key (redis-py packs and parses one script call per key), and a thousand
# keys read in one piece stalled every request in flight by 35 ms once a second (the benchmark's p99 with
# 1,000 keys). The first read, which requests wait for, is one call.
HEADROOM_SLICE = 50


@dataclass
class _KeyTiers:
    keys: tuple[KeyInfo, ...]  # the model's keys the view was built from (a new config builds new tuples)
    read_at: float
    # Equal headroom (to 0.1) per tier, best tier first; each tier's keys and their positions in ``keys``.
    tiers: list[tuple[list[KeyInfo], list[int]]]


_key_tiers: dict[str, _KeyTiers] = {}
# One read at a time per model: concurrent requests that find the view stale use it while the read runs
# (without a view yet they wait for that read), instead of each reading every key.
_reading: OneAtATime[str] = OneAtATime()


async def _tiers_of(model: ModelInfo) -> _KeyTiers:
    view = _key_tiers.get(model.name)
    if view is not None and view.keys is model.keys and time.monotonic() - view.read_at < HEADROOM_SECONDS:
        return view
    usable = view is not None and view.keys is model.keys
    reading = _reading.task(model.name, model.keys, lambda: _read_tiers(model, paced=usable))
    if usable:
        return view
    return await asyncio.shield(reading)


async def _read_tiers(model: ModelInfo, *, paced: bool = False) -> _KeyTiers:
    now = time.monotonic()
    routes = [model.route(key) for key in model.keys]
    store = get_quota_store()
    if not paced or len(routes) <= HEADROOM_SLICE:
        headrooms = await store.headrooms(routes)
    else:
        starts = range(0, len(routes), HEADROOM_SLICE)
        headrooms = []
        for start in starts:
            if start:
                await asyncio.sleep(HEADROOM_SECONDS / 2 / len(starts))
            headrooms += await store.headrooms(routes[start:start + HEADROOM_SLICE])
    grouped: dict[float, list[int]] = {}
    for i, room in enumerate(headrooms):
        grouped.setdefault(-round(room, 1), []).append(i)
    tiers = [([model.keys[i] for i in grouped[rank]], grouped[rank]) for rank in sorted(grouped)]
    if len(_key_tiers) > 10_000:
        _key_tiers.clear()
    view = _key_tiers[model.name] = _KeyTiers(model.keys, now, tiers)
    return view


def forget_headroom() -> None:
    """Drop the view (a test starting afresh)."""
    _key_tiers.clear()
    _reading.clear()


async def ordered_keys(model: ModelInfo) -> list[KeyInfo]:
    """Most headroom first; among equals, rotate so load spreads over a provider's keys."""
    if len(model.keys) < 2:
        return list(model.keys)
    view = await _tiers_of(model)
    turn = next(_rotation) % len(model.keys)
    ordered: list[KeyInfo] = []
    for keys, positions in view.tiers:
        # Within a tier, from the first key at or after this request's turn, round the tier.
        start = bisect.bisect_left(positions, turn)
        ordered += keys[start:]
        ordered += keys[:start]
    return ordered


# --- reserve → call → settle -----------------------------------------------------------------------


async def execute(
    ctx: RequestContext,
    models: tuple[ModelInfo, ...],
    attempt: AttemptFn,
    *,
    skip: Callable[[ModelInfo], str | None] | None = None,
) -> Served:
    """Walk the models in order and their keys until one serves. Raises GatewayError when none can.

    A 429 or an auth error is the key's: a sibling key is tried. A 5xx or a timeout is the provider's for
    that model: its other keys are skipped for this request. A connection error is the provider's as a
    whole: all its models are skipped for this request."""
    store = get_quota_store()
    down: set[str] = set()  # providers that refused the connection
    for model in models:
        if skip and (reason := skip(model)):
            too_small = is_context_reason(reason)
            ctx.trail.append(Step.skipped(Route(model.provider.slug, model.model_id, "*"), reason,
                                          StepGroup.CONTEXT_TOO_SMALL if too_small else StepGroup.NOT_CAPABLE,
                                          window=model.context_window if too_small else None))
            continue
        if model.provider.slug in down:
            ctx.trail.append(Step.skipped(Route(model.provider.slug, model.model_id, "*"), PROVIDER_DOWN,
                                          StepGroup.FAILING))
            continue
        try:
            adapter = get_adapter(model.provider.adapter)
        except KeyError:
            log.error("provider %s uses unknown adapter %r", model.provider.slug, model.provider.adapter)
            continue
        keys = await ordered_keys(model)
        for index, key in enumerate(keys):
            if ctx.attempts >= settings.FREELLM_MAX_ATTEMPTS or ctx.remaining() <= 0:
                raise exhausted_error(ctx, budget_spent=True)
            route = model.route(key)
            lease = await store.reserve(route, ctx.est_tokens)
            if isinstance(lease, Denied):
                group = _DENIAL_GROUPS.get(lease.reason, StepGroup.UNAVAILABLE)
                ctx.trail.append(Step.skipped(route, lease.reason, group, lease.retry_after))
                continue
            timeouts = default_timeouts()
            timeouts = replace(timeouts, first_token=max(0.1, min(timeouts.first_token, ctx.remaining())))
            began = time.monotonic()
            ctx.first_token_at = None
            try:
                result = await attempt(adapter, model.target(key), timeouts)
            except UpstreamError as exc:
                # Before the text reaches the trail, the quota store, the key's status, a log line or the client.
                exc.message = redact(exc.message, key.secret, ctx.client_key)
                step = Step(route, exc.kind.value, True, _ERROR_GROUPS.get(exc.kind, StepGroup.FAILING), exc.retry_after,
                            int((time.monotonic() - began) * 1000),
                            window=model.context_window if exc.kind == ErrorKind.CONTEXT_LENGTH else None)
                ctx.trail.append(step)
                metrics.upstream_calls_total.labels(route.provider, route.model, exc.kind.value).inc()
                await _settle_failure(store, lease, route, key, exc, ctx.api_key_id)
                if not exc.kind.fails_over:
                    raise client_error(exc, ctx) from None
                if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.CONTEXT_LENGTH):
                    break  # this model can't serve this request with any key
                if exc.kind in PROVIDER_FAILURES:
                    if exc.kind == ErrorKind.CONNECTION:
                        down.add(model.provider.slug)
                    for sibling in keys[index + 1:]:
                        ctx.trail.append(Step.skipped(model.route(sibling), PROVIDER_DOWN, StepGroup.FAILING))
                    break
                continue
            except BaseException as exc:
                # Cancelled (client left) or a bug: the call may have reached upstream; count it.
                outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
                ctx.trail.append(Step(route, outcome, True, ms=int((time.monotonic() - began) * 1000)))
                metrics.upstream_calls_total.labels(route.provider, route.model, outcome).inc()
                await store.settle(lease, 0)
                raise
            ctx.trail.append(Step(route, "ok", True, ms=int((time.monotonic() - began) * 1000)))
            metrics.upstream_calls_total.labels(route.provider, route.model, "ok").inc()
            first = ctx.first_token_at if ctx.first_token_at and ctx.first_token_at >= began else None
            return Served(model, key, route, lease, result, began=began, first_token_at=first)
    raise exhausted_error(ctx)


async def settle(served: Served, usage: Usage | None, *, error: UpstreamError | None = None,
                 fallback_tokens: int = 0, api_key_id: int | None = None) -> None:
    """Finish a served request: real usage to the quota store, the outcome to the circuit breaker."""
    if served.settled:
        return
    served.settled = True
    store = get_quota_store()
    tokens = usage.total_tokens if usage and usage.total_tokens else fallback_tokens
    if usage is not None:
        metrics.tokens_total.labels(served.route.provider, "prompt").inc(usage.prompt_tokens)
        metrics.tokens_total.labels(served.route.provider, "completion").inc(usage.completion_tokens)
    _observe(served, usage, error)
    if error is None:
        await store.finish(served.lease, tokens, served.route, None, headers=getattr(served.result, "headers", None))
    elif await _counts_against_health(served.route, error, api_key_id):
        await store.finish(served.lease, tokens, served.route, error.kind, retry_after=error.retry_after,
                           headers=error.headers, message=error.message)
    else:
        # This client's 5xx on this route already counted in the window: the tokens only.
        await store.settle(served.lease, tokens)
    if served.key.id is not None:
        _touch_key(served.key.id)


async def _settle_failure(store, lease: Lease, route: Route, key: KeyInfo, exc: UpstreamError,
                          api_key_id: int | None = None) -> None:
    if exc.kind == ErrorKind.CONNECTION and exc.spent is None:
        await store.release(lease)  # never reached the provider
        await store.record(route, exc.kind, retry_after=exc.retry_after, headers=exc.headers, message=exc.message)
    else:
        # A call that broke mid-answer spent what the provider counted; any other failure spent nothing.
        spent = exc.spent.total_tokens if exc.spent is not None else 0
        if await _counts_against_health(route, exc, api_key_id):
            await store.finish(lease, spent, route, exc.kind, retry_after=exc.retry_after, headers=exc.headers,
                               message=exc.message)
        else:
            # This client's 5xx on this route already counted in the window: the tokens only.
            await store.settle(lease, spent)
    if exc.kind in FAILURE_KINDS:
        get_stats_store().observe(route.provider, route.model, route.key, ok=False)
    if exc.kind == ErrorKind.AUTH and key.id is not None:
        await _mark_key_invalid(key.id, exc.message)


# A 5xx may be the request's fault (content the edge let through): one client's 5xx on a route count once
# per this many seconds, so that no client opens a route's circuit for everyone alone. Timeouts and
# connection failures say nothing about the request and always count.
CLIENT_FAILURE_WINDOW = 60
_client_failures: dict[tuple[str, int], float] = {}


async def _counts_against_health(route: Route, exc: UpstreamError, api_key_id: int | None) -> bool:
    if exc.kind != ErrorKind.SERVER or api_key_id is None:
        return True
    if settings.REDIS_URL:
        # Shared by every gateway process (the gateway's pooled client: Django's cache would open and keep a
        # Redis connection per concurrent request).
        marker = f"freellm:client-5xx:{api_key_id}:{route}"
        try:
            return bool(await redis_client(settings.REDIS_URL).set(marker, 1, ex=CLIENT_FAILURE_WINDOW, nx=True))
        except REDIS_ERRORS:
            pass
    # Without Redis (or while it is away): this process's own count.
    now = time.monotonic()
    seen = _client_failures.get((str(route), api_key_id))
    if seen is not None and now - seen < CLIENT_FAILURE_WINDOW:
        return False
    if len(_client_failures) > 10_000:
        _client_failures.clear()
    _client_failures[(str(route), api_key_id)] = now
    return True


def _observe(served: Served, usage: Usage | None, error: UpstreamError | None) -> None:
    """The route's stats: a served answer counts as a success unless it broke on the way. Time to first
    token is the call's start to its first content; tokens per second are counted after that."""
    route, now = served.route, time.monotonic()
    first = served.first_token_at or now
    get_stats_store().observe(route.provider, route.model, route.key, ok=error is None, ttft=first - served.began,
                              tokens=usage.completion_tokens if usage else 0, gen_seconds=now - first)


@sync_to_async
def _mark_key_invalid(key_id: int, detail: str) -> None:
    from providers.services import provider_key_mark_invalid
    from routing.config import bump_config_version

    provider_key_mark_invalid(key_id=key_id, detail=detail)
    bump_config_version()


# last_used_at is for people: the keys used since the last write are stamped together, at most once every
# TOUCH_SECONDS and off the request path, so even a thousand keys used in turn cost one UPDATE a while.
TOUCH_SECONDS = 30.0
_touch_pending: set[int] = set()
_touch_due = 0.0


def _touch_key(key_id: int) -> None:
    global _touch_due
    _touch_pending.add(key_id)
    now = time.monotonic()
    if now < _touch_due:
        return
    _touch_due = now + TOUCH_SECONDS
    from freellm.background import spawn

    spawn(_touch_flush())


async def _touch_flush() -> None:
    from providers.services import provider_keys_touch

    ids = sorted(_touch_pending)
    _touch_pending.clear()
    await provider_keys_touch(key_ids=ids)


# --- errors ----------------------------------------------------------------------------------------


def client_error(exc: UpstreamError, ctx: RequestContext) -> GatewayError:
    status = exc.status if exc.status and 400 <= exc.status < 500 else 400
    code = "content_blocked" if exc.kind == ErrorKind.BLOCKED else "upstream_rejected_request"
    return GatewayError(status, f"{ctx.trail[-1].route.provider} rejected the request: {exc.message}", code=code)


def exhausted_error(ctx: RequestContext, *, budget_spent: bool = False) -> GatewayError:
    steps = ctx.trail
    if not steps:
        return GatewayError(503, f"No usable upstream is configured for '{ctx.requested}' (no enabled key)",
                            code="no_upstream")
    groups = Counter(s.group for s in steps)
    parts = ", ".join(f"{n} {g}" for g, n in groups.most_common())
    waits = [s.retry_after for s in steps if s.retry_after is not None and s.group in _TEMPORARY]
    message = f"{len(steps)} route{'s' if len(steps) != 1 else ''} checked: {parts}"
    headers = {}
    if waits:
        soonest = max(1, math.ceil(min(waits)))
        message += f"; soonest reset in ~{soonest}s"
        headers["Retry-After"] = str(soonest)
    if budget_spent:
        message += f" (stopped after {ctx.attempts} attempts / {settings.FREELLM_TIME_BUDGET:g}s budget)"
    if set(groups) == {StepGroup.CONTEXT_TOO_SMALL}:
        # Every model was too small for it (gated out, or the upstream said so): OpenAI's 400, which clients
        # answer by trimming the conversation.
        windows = {f"{s.route.provider}/{s.route.model}": s.window for s in steps}
        return context_overflow_error(ctx.requested, ctx.context_tokens or ctx.est_tokens, windows)
    # Only waiting helps: some routes are out for now, the others could not serve it at all.
    unusable = {StepGroup.KEY_INVALID, StepGroup.NOT_CAPABLE, StepGroup.CONTEXT_TOO_SMALL}
    if set(groups) <= _TEMPORARY | unusable and groups.keys() & _TEMPORARY:
        return GatewayError(429, message, code="all_routes_exhausted", headers=headers)
    if set(groups) <= {StepGroup.NOT_CAPABLE, StepGroup.CONTEXT_TOO_SMALL, StepGroup.MODEL_UNAVAILABLE}:
        return GatewayError(422, message, code="no_capable_model")
    called = [s for s in steps if s.called]
    if called and all(s.group == StepGroup.TIMED_OUT for s in called):
        return GatewayError(504, message, code="upstream_timeout", headers=headers)
    if called and not groups.keys() & _TEMPORARY:
        return GatewayError(502, message, code="upstream_error", headers=headers)
    return GatewayError(503, message, code="upstream_unavailable", headers=headers)
