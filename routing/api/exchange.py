"""What every API surface shares: authentication, body parsing, the chat exchange, stream relay, trail headers
and the request-log row.

A dialect translates its request into one OpenAI chat-completions body, then:

    result = await chat(request, body, dialect=Dialect.X, stream=False)   # routed, failed over, settled, logged
    result.completion                                                      # one chat.completion dict

    result = await chat(request, body, dialect=Dialect.X, stream=True)    # primed: failover until first content
    return stream_response(request, result, XEncoder(...), content_type=...)  # relayed, settled, logged at the end

and translates ``result.completion`` or each ``chat.completion.chunk`` (in its ``StreamEncoder``) back. None
of them copies failover, priming, settling or logging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja.parser import Parser
from ninja.security import HttpBearer
from pydantic import BaseModel, ConfigDict

import freellm.background
from analytics.services import request_log_enqueue
from freellm.background import spawn
from providers.adapters.base import (
    Adapter,
    ErrorKind,
    Target,
    Timeouts,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
    Usage,
)
from providers.adapters.transport import CompletionAssembler, redact, usage_dict
from routing import budgets, continuity, fusion, metrics, router, toolcalls
from routing import cache as response_cache
from routing.auth import authenticate_request, raw_key_from
from routing.config import KeyInfo, get_routing_config
from routing.errors import GatewayError
from routing.families import embedding_resolution, family_unavailable
from routing.http import get_client
from routing.tokens import estimate_request_tokens, estimate_tokens

from .bodies import PARSED_JSON_SCOPE_KEY, parse_json
from .dialects import Dialect, dialect_of
from .validation import chat_messages_check

# --- the edge: authentication and body parsing -------------------------------------------------------


class UnifiedKeyAuth(HttpBearer):
    """`Authorization: Bearer <unified key>` (the scheme the OpenAPI docs show) or `x-api-key: <unified key>`."""

    def __call__(self, request: HttpRequest):
        # Not HttpBearer's header parsing: authenticate_request reads both headers.
        return self.authenticate(request, "")

    async def authenticate(self, request: HttpRequest, token: str):
        return await authenticate_request(request)


class JsonBodyParser(Parser):
    """``parse_json`` for ninja; a large body the edge (routing.api.edge) already parsed off the event loop
    is taken from there."""

    def parse_body(self, request: HttpRequest) -> Any:
        parsed = getattr(request, "scope", {}).get(PARSED_JSON_SCOPE_KEY)
        if parsed is not None:
            value, error = parsed
            if error is not None:
                raise error
            return value
        return parse_json(request.body)


class OpenSchema(BaseModel):
    """A request schema whose undeclared fields pass through to the upstream."""

    model_config = ConfigDict(extra="allow")

    def to_upstream(self) -> dict[str, Any]:
        """What the client sent (declared fields it set, plus every extra field), for the upstream."""
        return {**self.model_dump(exclude_unset=True), **(self.model_extra or {})}


# --- one routed request ------------------------------------------------------------------------------


def context(request: HttpRequest, kind: str, model: str, est_tokens: int, *,
            stream: bool = False) -> router.RequestContext:
    ctx = router.RequestContext(kind=kind, requested=model, est_tokens=est_tokens, stream=stream,
                                client_key=raw_key_from(request), api_key_id=_api_key_id(request))
    request.freellm_ctx = ctx  # for error responses and the request log
    # A server shutting down cancels it, so that it logs its row (freellm.background.shutdown_drain).
    freellm.background.request_task_track()
    return ctx


async def execute(request, ctx, resolution, call, *, skip=None, reword=None) -> router.Served:
    """router.execute, plus the request-log row of a client that left (errors are logged by their handler).
    skip: model → reason to pass it over (gating); reword: turns the router's error into the endpoint's own
    (embeddings name their family)."""
    if not hasattr(request, "freellm_budget"):
        resolution = await admit(request, ctx, resolution)
    try:
        return await router.execute(ctx, resolution.models, call, skip=skip)
    except GatewayError as exc:
        await _budget_finish(request, ctx, Usage(0, 0))
        if reword is None:
            raise
        raise reword(exc) from None
    except asyncio.CancelledError:
        spawn(_budget_finish(request, ctx, Usage(0, 0)))
        # The client left before an answer (499, as nginx logs it): the row still says what was tried.
        log_request(request, ctx, None, 499, None, outcome="cancelled", error="client disconnected")
        raise


async def admit(request: HttpRequest, ctx, resolution: router.Resolution) -> router.Resolution:
    """The key's and its user's budgets, before anything answers (the response cache and fusion included):
    the allowed models narrow the resolution, then one request and the token estimate are reserved (403 /
    429 here, before any route is tried); settled when the request ends."""
    resolution, request.freellm_budget = await budgets.admit(
        getattr(request, "auth", None), ctx.requested, resolution, ctx.est_tokens)
    return resolution


async def _budget_finish(request: HttpRequest, ctx, usage: Usage | None) -> None:
    """The request's budget reservations: settled with the real tokens (the estimate when the answer gave no
    usage; a failed request passes ``Usage(0, 0)``), or given back when no provider was called."""
    admission = getattr(request, "freellm_budget", None)
    if admission is None:
        return
    if not ctx.attempts:
        await admission.finish(None)
    else:
        await admission.finish(usage.total_tokens if usage is not None else ctx.est_tokens)


async def route(request: HttpRequest, kind: str, model: str, est_tokens: int, call):
    """Resolve ``model`` for ``kind`` and run ``call`` through the router: (ctx, served), not yet settled."""
    ctx = context(request, kind, model, est_tokens)
    resolution = await router.arrange(ctx, resolved(ctx, router.resolve(await get_routing_config(), model, kind)))
    return ctx, await execute(request, ctx, resolution, call)


def resolved(ctx: router.RequestContext, resolution: router.Resolution) -> router.Resolution:
    """Note on ``ctx`` which chain (and alias) the requested name resolved to, for the trail headers."""
    ctx.chain = resolution.chain or ""
    ctx.alias = resolution.alias or ""
    return resolution


async def finish(request: HttpRequest, ctx, served: router.Served, usage: Usage | None) -> None:
    """Settle a served plain request and write its row."""
    await router.settle(served, usage, fallback_tokens=ctx.est_tokens)
    await _budget_finish(request, ctx, usage)
    log_request(request, ctx, served, 200, usage)


# --- chat ----------------------------------------------------------------------------------------------


@dataclass
class ChatResult:
    ctx: router.RequestContext
    served: router.Served
    completion: dict[str, Any] | None = None  # plain: the assembled chat.completion
    cached: bool = False  # served from the response cache (routing/cache.py): no upstream call, no quota

    @property
    def primed(self) -> tuple[UpstreamStream, Any, list[dict]]:
        """stream: (upstream stream, its chunk iterator, the chunks read while priming)."""
        return self.served.result


# (adapter, target, the chat body for that target, timeouts) → the opened upstream stream of chat chunks.
UpstreamOpener = Callable[[Adapter, Target, dict[str, Any], Timeouts], Awaitable[UpstreamStream]]


async def open_chat_stream(adapter: Adapter, target: Target, body: dict[str, Any],
                           timeouts: Timeouts) -> UpstreamStream:
    return await adapter.chat_stream(get_client(target.proxy), target, body, timeouts)


async def chat(request: HttpRequest, body: dict[str, Any], *, dialect: Dialect, stream: bool,
               session_user: str | None = None, opener: UpstreamOpener = open_chat_stream,
               conversation_sessions: bool = True) -> ChatResult:
    """Route one chat request (an OpenAI chat-completions body; ``stream`` and ``stream_options`` are the
    exchange's business and are not sent upstream as given). ``session_user`` keys the sticky session when
    the dialect has its own notion of a user (Anthropic's metadata.user_id). ``opener`` calls the upstream
    when a dialect has a native endpoint for some models (legacy completions: fill in the middle); whatever
    it opens must stream chat.completion.chunk dicts. ``conversation_sessions=False``: sticky only when the
    client names its session (X-Session-Id, ``user``), for requests that are not conversations."""
    request.freellm_dialect = dialect
    # Malformed messages are the client's 400, never an upstream's 5xx counted against the route.
    chat_messages_check(body["messages"])
    ctx = context(request, "chat", body["model"], estimate_request_tokens(body), stream=stream)
    ctx.prompt_tokens = estimate_tokens(body["messages"])
    cfg = await get_routing_config()
    resolution = resolved(ctx, router.resolve(cfg, body["model"], "chat"))
    upstream = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    if session_user and not upstream.get("user"):
        upstream["user"] = session_user
    resolution = await admit(request, ctx, resolution)
    slot = await _cache_slot(request, cfg, resolution, "chat", upstream, stream=stream)
    if slot is not None and (hit := _cache_hit(request, ctx, cfg, slot, stream=stream)):
        await _budget_finish(request, ctx, Usage(0, 0))  # no provider was called: the reservation goes back
        return hit
    resolution = await router.arrange(ctx, resolution)
    # Gating (400/422 before any call), the session's sticky model first, a handoff for whoever takes over.
    plan = await continuity.chat_plan(body=upstream, headers=request.headers, api_key_id=_api_key_id(request),
                                      resolution=resolution, requested=body["model"], ctx=ctx,
                                      conversation_sessions=conversation_sessions)
    # What free models get wrong (text tool calls, double-encoded arguments, inline <think>, empty answers) is
    # put right here, before any dialect sees the answer; an empty one fails over like a 5xx.
    tools = toolcalls.tool_spec(upstream)

    if fusion.applies(resolution, upstream):
        result = await _fused(request, ctx, cfg, plan, upstream, stream=stream, opener=opener)
    elif not stream:
        # Upstream streams even here: a hung provider is caught by the first-token and idle timeouts while a
        # slow but steady answer runs on, bounded only by the time budget.
        served = await execute(request, ctx, plan.resolution, _plain_attempt(ctx, plan.body_for, opener, tools),
                               skip=plan.skip)
        await plan.settle(ctx, served)
        await finish(request, ctx, served, served.result.usage)
        result = ChatResult(ctx, served, completion=served.result.body)
    else:
        served = await execute(request, ctx, plan.resolution, _stream_attempt(ctx, plan.body_for, opener, tools),
                               skip=plan.skip)
        await plan.settle(ctx, served)
        result = ChatResult(ctx, served)
    if slot is not None and result.completion is not None:
        await slot.store(result.completion, result.served.model.name)
    return result


def _plain_attempt(ctx, body_for, opener: UpstreamOpener, tools) -> router.AttemptFn:
    """Call one model for a plain answer (``body_for(target)``: what to send it): streamed, then assembled,
    then put right (routing/toolcalls.py)."""
    async def call(adapter, target, timeouts):
        primed = await _primed_stream(ctx, opener(adapter, target, body_for(target), timeouts), timeouts)
        answer = await _assembled(ctx, primed)
        try:
            answer.body = toolcalls.rescue_completion(answer.body, tools)
        except UpstreamError as exc:
            exc.spent = answer.usage
            raise
        return answer

    return call


def _stream_attempt(ctx, body_for, opener: UpstreamOpener, tools) -> router.AttemptFn:
    async def call(adapter, target, timeouts):
        return await _primed_stream(ctx, opener(adapter, target, body_for(target), timeouts), timeouts,
                                    rescuer=toolcalls.StreamRescuer(tools))

    return call


async def _fused(request, ctx, cfg, plan, body: dict, *, stream: bool, opener: UpstreamOpener) -> ChatResult:
    """A fusion chain's answer (routing/fusion.py): a panel of members, then the judge's or the chosen draft."""
    def plain(c, b):
        return _plain_attempt(c, lambda _target: b, opener, toolcalls.tool_spec(b))

    def streamed(c, b):
        return _stream_attempt(c, lambda _target: b, opener, toolcalls.tool_spec(b))

    try:
        fused = await fusion.fuse(ctx=ctx, cfg=cfg, resolution=plan.resolution, body=body, stream=stream,
                                  skip=plan.skip, plain=plain, streamed=streamed)
    except asyncio.CancelledError:
        log_request(request, ctx, None, 499, None, outcome="cancelled", error="client disconnected")
        raise
    if fused.completion is None:
        return ChatResult(ctx, fused.served)  # the judge's primed stream
    if stream:
        return _replayed(ctx, fused.served, fused.completion)
    await finish(request, ctx, fused.served, fused.served.result.usage)
    return ChatResult(ctx, fused.served, completion=fused.completion)


# --- the response cache (routing/cache.py), for every dialect ---------------------------------------------


async def _cache_slot(request, cfg, resolution: router.Resolution, kind: str, body: dict, *,
                      stream: bool = False) -> response_cache.CacheSlot | None:
    api_key = getattr(request, "auth", None)
    slot = await response_cache.cache_slot(
        chain=cfg.chains.get(resolution.chain) if resolution.chain else None, kind=kind, body=body,
        headers=request.headers, stream=stream, user_id=getattr(api_key, "user_id", None),
        api_key_id=getattr(api_key, "id", None))
    if slot is not None:
        request.freellm_ctx.cache = "miss"
    return slot


def _cache_hit(request, ctx, cfg, slot: response_cache.CacheSlot, *, stream: bool) -> ChatResult | None:
    """A cached answer as this request's result, logged (a plain one now, a replayed stream at its end)."""
    served = _cached_served(cfg, slot)
    if served is None:
        return None
    ctx.cache = "hit"
    if stream:
        return _replayed(ctx, served, slot.entry["answer"], cached=True)
    log_request(request, ctx, served, 200, None, outcome="cache_hit")
    return ChatResult(ctx, served, completion=slot.entry["answer"], cached=True)


def _cached_served(cfg, slot: response_cache.CacheSlot) -> router.Served | None:
    """Who the cached answer came from, for the headers and the log row (nothing left to settle)."""
    model = cfg.by_name.get((slot.entry or {}).get("served", ""))
    if model is None:
        return None  # the model that answered is gone (or no hit): ask upstream again
    key = KeyInfo(None, "", "")
    return router.Served(model, key, model.route(key), lease=None, result=slot.entry["answer"], settled=True)


def _replayed(ctx, served: router.Served, completion: dict, *, cached: bool = False) -> ChatResult:
    """A ready plain answer streamed to a stream client (a cache replay, a fusion draft)."""
    replay = response_cache.ReplayStream(response_cache.completion_chunks(completion))
    served = replace(served, result=(replay, replay.chunks().__aiter__(), []))
    return ChatResult(ctx, served, cached=cached)


_TEXT_DELTA_FIELDS = ("content", "reasoning", "reasoning_content", "refusal")


def chunk_problem(chunk: Any) -> str | None:
    """What makes an upstream ``chat.completion.chunk`` unusable (wrong types that would break the relay,
    the assembler or a dialect's encoder), or None."""
    if not isinstance(chunk, dict):
        return "a chunk that is not an object"
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        return "`choices` that is not a list"
    usage = chunk.get("usage")
    if usage is not None and (not isinstance(usage, dict) or not all(
            isinstance(usage.get(name, 0), int | None) for name in ("prompt_tokens", "completion_tokens"))):
        return "`usage` that is not an object of token counts"
    for choice in choices or ():
        if not isinstance(choice, dict):
            return "a choice that is not an object"
        if not isinstance(choice.get("finish_reason"), str | None):
            return "a `finish_reason` that is not a string"
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            return "a `delta` that is not an object"
        for name in _TEXT_DELTA_FIELDS:
            # Text; Mistral's thinking models stream lists of content parts instead.
            if not isinstance(delta.get(name), str | list | None):
                return f"a `delta.{name}` that is neither text nor content parts"
        calls = delta.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls)):
            return "`delta.tool_calls` that is not a list of objects"
    return None


async def _checked(chunks: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """The upstream's chunks, each checked: a malformed one is the upstream failing (before the first byte
    the router fails over; after it the client gets the dialect's stream_interrupted event)."""
    async for chunk in chunks:
        if problem := chunk_problem(chunk):
            raise UpstreamError(ErrorKind.SERVER, f"the upstream stream sent {problem}")
        yield chunk


async def _primed_stream(ctx, opening: Awaitable[UpstreamStream], timeouts: Timeouts, *,
                         rescuer: toolcalls.StreamRescuer | None = None) -> tuple[UpstreamStream, Any, list[dict]]:
    """Open the stream and read up to the first content chunk, so failover stays invisible until then.

    With a ``rescuer`` (streams to the client) the chunks pass through it: the answer has begun with the
    upstream's first real output even while the rescuer holds it back (a possible text tool call), and an
    answer that ends with nothing in it fails here, before the first byte."""
    stream = await opening
    chunks = _checked(stream.chunks()).__aiter__()
    batches = _rescued(chunks, rescuer) if rescuer is not None else None
    buffered: list[dict] = []
    try:
        async with asyncio.timeout(timeouts.first_token):
            if batches is None:
                async for chunk in chunks:
                    buffered.append(chunk)
                    if _has_content(chunk):
                        break
            else:
                async for batch in batches:
                    buffered.extend(batch)
                    if rescuer.begun or rescuer.finished:
                        break
        ctx.first_token_at = time.monotonic()
    except TimeoutError:
        await stream.aclose()
        raise UpstreamError(ErrorKind.TIMEOUT, "no first token in time") from None
    except BaseException:
        await stream.aclose()
        raise
    return stream, (chunks if batches is None else _flattened(batches)), buffered


async def _rescued(chunks: AsyncIterator[dict], rescuer: toolcalls.StreamRescuer) -> AsyncIterator[list[dict]]:
    """Per upstream chunk, what the rescuer sends in its place (often nothing while it holds text back)."""
    async for chunk in chunks:
        yield rescuer.feed(chunk)
    yield rescuer.close()


async def _flattened(batches: AsyncIterator[list[dict]]) -> AsyncIterator[dict]:
    async for batch in batches:
        for chunk in batch:
            yield chunk


async def _assembled(ctx: router.RequestContext, primed) -> UpstreamResponse:
    """The rest of a primed stream, read within what is left of the time budget, as one chat.completion.

    A failure here still fails over, since a non-stream client has received nothing yet; the error carries
    the tokens the broken answer used so far, for the quota."""
    stream, chunks, buffered = primed
    assembler = CompletionAssembler()
    try:
        for chunk in buffered:
            assembler.feed(chunk)
        async with asyncio.timeout(max(0.0, ctx.remaining())):
            async for chunk in chunks:
                assembler.feed(chunk)
        body, usage = assembler.result()
    except TimeoutError:
        raise UpstreamError(
            ErrorKind.TIMEOUT, f"answer not finished within the {settings.FREELLM_TIME_BUDGET:g}s time budget",
            spent=assembler.usage or estimated_usage(ctx, assembler.generated_chars),
        ) from None
    except UpstreamError as exc:
        exc.spent = assembler.usage or estimated_usage(ctx, assembler.generated_chars)
        raise
    finally:
        await stream.aclose()
    if usage is None:
        # Clients read `usage` from every answer; without the provider's count, the gateway's estimate.
        usage = estimated_usage(ctx, assembler.generated_chars)
        body["usage"] = usage_dict(usage.prompt_tokens, usage.completion_tokens)
    return UpstreamResponse(body, usage, stream.headers)


def estimated_usage(ctx: router.RequestContext, completion_chars: int) -> Usage:
    """What an answer the provider did not count cost: the prompt estimate and about four characters a token."""
    return Usage(ctx.prompt_tokens, max(1, completion_chars // 4))


def _has_content(chunk: dict) -> bool:
    """Whether the answer has begun: anything in a delta but its role (content, tool calls, and the reasoning
    that gpt-oss or DeepSeek-R1 stream long before their content), or a finish reason."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or any(value for key, value in delta.items() if key != "role"):
            return True
    return False


# --- streams ---------------------------------------------------------------------------------------------


class StreamEncoder(Protocol):
    """Turns the upstream's chat.completion.chunk dicts into a dialect's stream. Each method returns the bytes
    to send (b"" for nothing)."""

    # Seconds of upstream silence after which keepalive() is sent; None: never (no timer per chunk).
    keepalive_seconds: float | None

    def start(self) -> bytes: ...  # once, before the first chunk

    def chunk(self, chunk: dict) -> bytes: ...

    def finish(self, usage: Usage) -> bytes: ...  # the upstream ended normally

    def fail(self, error: GatewayError) -> bytes: ...  # it broke after the first byte: no failover now

    def keepalive(self) -> bytes: ...


def sse(data: Any) -> bytes:
    """One unnamed server-sent event (``data: <JSON>``), as OpenAI's chat and completion streams are written."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def sse_event(name: str, data: Any) -> bytes:
    """One named server-sent event (``event: <name>``, then the JSON ``data``), as Anthropic's and the
    Responses API's streams are written."""
    return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def stream_response(request: HttpRequest, result: ChatResult, encoder: StreamEncoder, *,
                    content_type: str = "text/event-stream") -> StreamingHttpResponse:
    response = StreamingHttpResponse(_relay(request, result, encoder), content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return with_trail(response, result.ctx, result.served)


async def _relay(request, result: ChatResult, encoder: StreamEncoder) -> AsyncIterator[bytes]:
    ctx, served = result.ctx, result.served
    stream, chunks, buffered = result.primed
    usage: Usage | None = None
    text_chars = 0
    error: UpstreamError | None = None
    status, outcome = 200, "cache_hit" if result.cached else "ok"

    def account(chunk: dict) -> None:
        nonlocal usage, text_chars
        if u := chunk.get("usage"):
            usage = Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or ():
            text_chars += len((choice.get("delta") or {}).get("content") or "")

    spawned = False

    def settle_and_log() -> None:
        """Once: close upstream at once (no tokens burnt for nobody), settle and log, even when the client left.
        Started before the last event goes out, so whoever reads the end of the stream finds the work under
        way (background_idle) rather than not yet begun."""
        nonlocal spawned
        if spawned:
            return
        spawned = True

        async def work():
            await stream.aclose()
            final = usage or estimated_usage(ctx, text_chars)
            await router.settle(served, final, error=error, fallback_tokens=ctx.est_tokens,
                                api_key_id=ctx.api_key_id)
            await _budget_finish(request, ctx, final)
            log_request(request, ctx, served, status, None if result.cached else final, outcome=outcome,
                        error=error.message if error else "")

        # Redis and the request-log queue only; the log's flush task tidies ORM connections after itself.
        spawn(work(), uses_orm=False)

    try:
        ctx.first_byte_at = time.monotonic()
        if data := encoder.start():
            yield data
        for chunk in buffered:
            account(chunk)
            if data := encoder.chunk(chunk):
                yield data
        async for item in _with_keepalive(chunks, encoder.keepalive_seconds):
            if item is None:
                if data := encoder.keepalive():
                    yield data
                continue
            account(item)
            if data := encoder.chunk(item):
                yield data
        data = encoder.finish(usage or estimated_usage(ctx, text_chars))
        settle_and_log()
        if data:
            yield data
    except UpstreamError as exc:
        # After the first byte there is no failover: the dialect's error event, never its normal end.
        exc.message = redact(exc.message, served.key.secret, ctx.client_key)
        error, status, outcome = exc, 502, "incomplete"
        data = encoder.fail(GatewayError(502, f"upstream stream failed: {exc.message}", code="stream_interrupted"))
        settle_and_log()
        yield data
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        settle_and_log()


async def _with_keepalive(chunks, seconds: float | None) -> AsyncIterator[dict | None]:
    """The chunks, with a None whenever the upstream has been silent for ``seconds``."""
    if seconds is None:
        async for chunk in chunks:
            yield chunk
        return
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            done, _ = await asyncio.wait((pending,), timeout=seconds)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                chunk = task.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if pending is not None:
            pending.cancel()


# --- embeddings ----------------------------------------------------------------------------------------


async def embeddings(request: HttpRequest, body: dict[str, Any], *,
                     dialect: Dialect) -> tuple[dict, router.RequestContext, router.Served]:
    """One OpenAI embeddings body routed inside its model's family: (the OpenAI embeddings answer, ctx, served),
    settled and logged."""
    request.freellm_dialect = dialect
    ctx = context(request, "embedding", body["model"], estimate_tokens(body["input"]))
    # Failover only inside the requested model's family: a vector from another family would be garbage.
    cfg = await get_routing_config()
    resolution, family = embedding_resolution(cfg, body["model"])
    resolution = await admit(request, ctx, resolved(ctx, resolution))
    slot = await _cache_slot(request, cfg, resolution, "embedding", body)
    if slot is not None and (served := _cached_served(cfg, slot)):
        await _budget_finish(request, ctx, Usage(0, 0))
        ctx.cache = "hit"
        log_request(request, ctx, served, 200, None, outcome="cache_hit")
        return slot.entry["answer"], ctx, served
    resolution = await router.arrange(ctx, resolution)

    async def call(adapter, target, timeouts):
        return await adapter.embeddings(get_client(target.proxy), target, body, timeouts)

    served = await execute(request, ctx, resolution, call, reword=lambda exc: family_unavailable(exc, family))
    await finish(request, ctx, served, served.result.usage)
    if slot is not None:
        await slot.store(served.result.body, served.model.name)
    return served.result.body, ctx, served


# --- what the response says ------------------------------------------------------------------------------


def json_response(data: Any, *, status: int = 200) -> HttpResponse:
    """A JSON answer serialised by orjson (several times faster than json on completions and vectors)."""
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def with_trail(response: HttpResponse, ctx: router.RequestContext | ChatResult | None,
               served: router.Served | None = None) -> HttpResponse:
    """The X-FreeLLM-* headers: who answered, how many calls it took, every route looked at, the chain that
    served (and the alias that led to it), a switch."""
    if isinstance(ctx, ChatResult):
        ctx, served = ctx.ctx, ctx.served
    if ctx is None:
        return response
    response["X-FreeLLM-Request-Id"] = ctx.request_id
    if served is not None:
        response["X-FreeLLM-Provider"] = served.model.provider.slug
        response["X-FreeLLM-Model"] = served.model.model_id
    response["X-FreeLLM-Attempts"] = str(ctx.attempts)
    if ctx.strategy:
        response["X-FreeLLM-Strategy"] = ctx.strategy
    response["X-FreeLLM-Trail"] = ctx.trail_header()
    if ctx.chain:
        response["X-FreeLLM-Chain"] = continuity.switch_header_value(ctx.chain)
    if ctx.alias:
        response["X-FreeLLM-Alias"] = continuity.switch_header_value(ctx.alias)
    if ctx.cache:
        response[response_cache.HEADER] = ctx.cache
    if ctx.switched:
        response[continuity.SWITCH_HEADER] = continuity.switch_header_value(ctx.switched)
    return response


def _api_key_id(request) -> int | None:
    return getattr(getattr(request, "auth", None), "id", None)


def log_request(request, ctx, served, status: int, usage: Usage | None, *, outcome: str | None = None,
                error: str = "") -> None:
    """Queue the request's one RequestLog row (written in batches off the request path)."""
    api_key = getattr(request, "auth", None)
    if outcome is None:
        outcome = "ok" if status < 400 else "exhausted" if status == 429 else (
            "client_error" if status < 500 else "upstream_error")
    dialect = dialect_of(request)
    now = time.monotonic()
    latency = now - ctx.started
    first_token_ms = None
    metrics.requests_total.labels(ctx.kind, dialect, outcome, str(status)).inc()
    metrics.request_duration_seconds.labels(ctx.kind, dialect).observe(latency)
    if ctx.first_byte_at is not None:
        first_token_ms = int((ctx.first_byte_at - ctx.started) * 1000)
        metrics.ttft_seconds.labels(dialect).observe(ctx.first_byte_at - ctx.started)
    if served is not None:
        # Up to the answer (a stream's first byte; after it the time is the upstream's), less the upstream calls.
        answered = ctx.first_byte_at if ctx.first_byte_at is not None else now
        upstream = sum(step.ms for step in ctx.trail if step.called) / 1000
        metrics.gateway_overhead_seconds.labels(ctx.kind).observe(max(0.0, answered - ctx.started - upstream))
    request_log_enqueue(
        request_id=ctx.request_id,
        api_key_id=getattr(api_key, "id", None),
        user_id=getattr(api_key, "user_id", None),
        endpoint=ctx.kind,
        dialect=dialect,
        requested_model=ctx.requested[:200],
        provider=served.model.provider.slug if served else "",
        model=served.model.model_id if served else "",
        key_label=served.key.label if served else "",
        stream=ctx.stream,
        status_code=status,
        outcome=outcome,
        attempts=ctx.attempts,
        trail=[{"route": str(s.route), "outcome": s.outcome, "ms": s.ms} for s in ctx.trail],
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        latency_ms=int(latency * 1000),
        first_token_ms=first_token_ms,
        error=error[:500],
        session_id=ctx.session_id,
        switched=ctx.switched[:300],
    )


def background_idle() -> bool:
    from analytics.services import request_logs_idle
    from analytics.sessions import session_log_idle

    return freellm.background.background_idle() and request_logs_idle() and session_log_idle()
