"""The OpenAI-compatible /v1 API. Thin: parse and authenticate at the edge, then hand over to the router."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

import freellm.background
from analytics.services import request_log_enqueue
from freellm.background import spawn
from providers.adapters.base import ErrorKind, UpstreamError, UpstreamResponse, UpstreamStream, Usage
from providers.adapters.transport import CompletionAssembler, usage_dict
from routing import continuity, router
from routing.auth import authenticate_request
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.families import embedding_resolution, family_unavailable
from routing.quota import get_quota_store
from routing.tokens import estimate_request_tokens, estimate_tokens

log = logging.getLogger(__name__)


class UnifiedKeyAuth(HttpBearer):
    """`Authorization: Bearer <unified key>` (the scheme the OpenAPI docs show) or `x-api-key: <unified key>`."""

    def __call__(self, request: HttpRequest):
        # Not HttpBearer's header parsing: authenticate_request reads both headers.
        return self.authenticate(request, "")

    async def authenticate(self, request: HttpRequest, token: str):
        return await authenticate_request(request)


# Deeper than any real request (content parts, tool schemas) and far below where recursive code (token
# estimates, JSON encoding for the upstream) would hit Python's recursion limit.
MAX_JSON_DEPTH = 64


class JsonBodyParser(Parser):
    """json.loads with a nesting limit: a deeper body is refused before any code walks it."""

    def parse_body(self, request: HttpRequest) -> Any:
        too_deep = ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            data = json.loads(request.body)
        except RecursionError:
            raise too_deep from None
        if _nested_deeper_than(data, MAX_JSON_DEPTH):
            raise too_deep
        return data


def _nested_deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


api = NinjaAPI(
    title="freellm",
    version="1",
    description="OpenAI-compatible gateway over the free tiers of many LLM providers.",
    urls_namespace="v1",
    docs_url="/docs",
    auth=UnifiedKeyAuth(),
    parser=JsonBodyParser(),
)


# --- errors in OpenAI's shape ----------------------------------------------------------------------


@api.exception_handler(GatewayError)
def _gateway_error(request, exc: GatewayError):
    ctx = getattr(request, "freellm_ctx", None)
    if ctx is not None:
        # Whatever stopped a request that named a model (unknown model, no capable one, every route failed),
        # the request log gets its row.
        _log(request, ctx, None, exc.status, None, error=exc.message)
    return _with_trail(exc.response(), ctx)


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    return GatewayError(401, "Invalid or missing API key. Send `Authorization: Bearer <key>`.",
                        code="invalid_api_key").response()


# ninja's first element of an error location: which part of the request it is in.
_REQUEST_PARTS = ("body", "query", "form", "file", "path", "header", "cookie")


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    if loc[:1] and loc[0] in _REQUEST_PARTS:
        loc = loc[1:]
    if loc[:1] == ["payload"]:  # the name of the views' body parameter
        loc = loc[1:]
    if not loc:
        return GatewayError(400, "The request body must be a JSON object.", code="invalid_value").response()
    param = ".".join(loc)
    return GatewayError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param,
                        code="invalid_value").response()


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    message = str(exc)
    # ninja's "Cannot parse request body", raised from the parser's error: say what was wrong.
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        message = f"We could not parse the JSON body of your request: {exc.__cause__}."
    return GatewayError(exc.status_code, message).response()


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return GatewayError(413, "Request body is too large.", code="request_too_large").response()


# --- schemas (extra fields pass through to the upstream) --------------------------------------------


class _OpenSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_upstream(self) -> dict[str, Any]:
        """What the client sent (declared fields it set, plus every extra field), for the upstream."""
        return {**self.model_dump(exclude_unset=True), **(self.model_extra or {})}


class ChatCompletionRequest(_OpenSchema):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise PydanticCustomError(
                "one_choice",
                "only n=1 is supported: freellm returns one choice per request, since a failover to another "
                "provider could not promise several; send several requests instead",
            )
        return n


class EmbeddingRequest(_OpenSchema):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(None, ge=1)
    encoding_format: str | None = Field(None, pattern="^(float|base64)$")

    @field_validator("input")
    @classmethod
    def _something_to_embed(cls, value):
        if not value or (isinstance(value, list) and not all(value)):
            raise PydanticCustomError("empty_input", "input must not be empty, nor hold an empty item")
        return value


# --- endpoints ------------------------------------------------------------------------------------


@api.post("/chat/completions", summary="Create a chat completion (streaming or not)")
async def chat_completions(request: HttpRequest, payload: ChatCompletionRequest):
    body = payload.to_upstream()
    for i, message in enumerate(body["messages"]):
        if not isinstance(message.get("role"), str):
            raise GatewayError(400, f"messages[{i}].role is required", param=f"messages.{i}.role",
                               code="invalid_value")
    stream = bool(body.get("stream"))
    ctx = _context(request, "chat", body["model"], estimate_request_tokens(body), stream=stream)
    ctx.prompt_tokens = estimate_tokens(body["messages"])
    resolution = router.resolve(await get_routing_config(), body["model"], "chat")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    upstream = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    # Gating (422 before any call), the session's sticky model first, a handoff for whoever takes over.
    plan = await continuity.chat_plan(body=upstream, headers=request.headers, api_key_id=_api_key_id(request),
                                      resolution=resolution, requested=body["model"])

    if not stream:
        # Upstream streams even here: a hung provider is caught by the first-token and idle timeouts while a
        # slow but steady answer runs on, bounded only by the time budget.
        async def call(adapter, target, timeouts):
            primed = await _primed_stream(adapter, target, plan.body_for(target), timeouts)
            return await _assembled(ctx, primed)

        served = await _execute(request, ctx, plan.resolution, call, skip=plan.skip)
        await plan.settle(ctx, served)
        result = served.result
        await router.settle(served, result.usage, fallback_tokens=ctx.est_tokens)
        _log(request, ctx, served, 200, result.usage)
        return _with_trail(JsonResponse(result.body), ctx, served)

    async def open_stream(adapter, target, timeouts):
        return await _primed_stream(adapter, target, plan.body_for(target), timeouts)

    served = await _execute(request, ctx, plan.resolution, open_stream, skip=plan.skip)
    await plan.settle(ctx, served)
    response = StreamingHttpResponse(_relay(request, ctx, served, include_usage), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return _with_trail(response, ctx, served)


@api.post("/embeddings", summary="Create embeddings")
async def embeddings(request: HttpRequest, payload: EmbeddingRequest):
    body = payload.to_upstream()
    ctx = _context(request, "embedding", body["model"], estimate_tokens(body["input"]))
    # Failover only inside the requested model's family: a vector from another family would be garbage.
    resolution, family = embedding_resolution(await get_routing_config(), body["model"])

    async def call(adapter, target, timeouts):
        return await adapter.embeddings(router_client(), target, body, timeouts)

    served = await _execute(request, ctx, resolution, call, reword=lambda exc: family_unavailable(exc, family))
    await router.settle(served, served.result.usage, fallback_tokens=ctx.est_tokens)
    _log(request, ctx, served, 200, served.result.usage)
    return _with_trail(JsonResponse(served.result.body), ctx, served)


@api.get("/models", summary="List the chains and models you may use")
async def list_models(request: HttpRequest, available: bool = False):
    return {"object": "list", "data": await _model_entries(available=available)}


@api.get("/models/{path:model}", summary="Describe one chain or model")
async def retrieve_model(request: HttpRequest, model: str):
    for entry in await _model_entries(available=False):
        if entry["id"] == model:
            return entry
    raise GatewayError(404, f"The model '{model}' does not exist or is disabled", code="model_not_found",
                       param="model")


async def _model_entries(*, available: bool) -> list[dict[str, Any]]:
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


# --- plumbing -------------------------------------------------------------------------------------


def router_client():
    from routing.http import get_client

    return get_client()


def _context(request: HttpRequest, kind: str, model: str, est_tokens: int, *,
             stream: bool = False) -> router.RequestContext:
    ctx = router.RequestContext(kind=kind, requested=model, est_tokens=est_tokens, stream=stream)
    request.freellm_ctx = ctx  # for error responses and the request log
    # A server shutting down cancels it, so that it logs its row (freellm.background.shutdown_drain).
    freellm.background.request_task_track()
    return ctx


async def _execute(request, ctx, resolution, call, *, skip=None, reword=None) -> router.Served:
    """router.execute, plus the request-log row of a client that left (errors are logged by their handler).
    skip: model → reason to pass it over (gating); reword: turns the router's error into the endpoint's own
    (embeddings name their family)."""
    try:
        return await router.execute(ctx, resolution.models, call, skip=skip)
    except GatewayError as exc:
        if reword is None:
            raise
        raise reword(exc) from None
    except asyncio.CancelledError:
        # The client left before an answer (499, as nginx logs it): the row still says what was tried.
        _log(request, ctx, None, 499, None, outcome="cancelled", error="client disconnected")
        raise


async def _primed_stream(adapter, target, body, timeouts) -> tuple[UpstreamStream, Any, list[dict]]:
    """Open the stream and read up to the first content chunk, so failover stays invisible until then."""
    stream = await adapter.chat_stream(router_client(), target, body, timeouts)
    chunks = stream.chunks().__aiter__()
    buffered: list[dict] = []
    try:
        async with asyncio.timeout(timeouts.first_token):
            async for chunk in chunks:
                buffered.append(chunk)
                if _has_content(chunk):
                    break
    except TimeoutError:
        await stream.aclose()
        raise UpstreamError(ErrorKind.TIMEOUT, "no first token in time") from None
    except BaseException:
        await stream.aclose()
        raise
    return stream, chunks, buffered


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
            spent=assembler.usage or _estimated_usage(ctx, assembler.generated_chars),
        ) from None
    except UpstreamError as exc:
        exc.spent = assembler.usage or _estimated_usage(ctx, assembler.generated_chars)
        raise
    finally:
        await stream.aclose()
    if usage is None:
        # Clients read `usage` from every answer; without the provider's count, the gateway's estimate.
        usage = _estimated_usage(ctx, assembler.generated_chars)
        body["usage"] = usage_dict(usage.prompt_tokens, usage.completion_tokens)
    return UpstreamResponse(body, usage, stream.headers)


def _estimated_usage(ctx: router.RequestContext, completion_chars: int) -> Usage:
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


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _relay(request, ctx: router.RequestContext, served: router.Served, include_usage: bool):
    stream, chunks, buffered = served.result
    usage: Usage | None = None
    text_chars = 0
    error: UpstreamError | None = None
    status, outcome = 200, "ok"

    def account(chunk: dict) -> bool:
        """Track usage and text; False for a usage-only chunk the client did not ask for."""
        nonlocal usage, text_chars
        if u := chunk.get("usage"):
            usage = Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)
            if not include_usage:
                if not chunk.get("choices"):
                    return False
                chunk.pop("usage")
        for choice in chunk.get("choices") or ():
            text_chars += len((choice.get("delta") or {}).get("content") or "")
        return True

    try:
        for chunk in buffered:
            if account(chunk):
                yield _sse(chunk)
        async for chunk in chunks:
            if account(chunk):
                yield _sse(chunk)
        yield b"data: [DONE]\n\n"
    except UpstreamError as exc:
        # After the first byte there is no failover: end with an error event and no [DONE].
        error, status, outcome = exc, 502, "incomplete"
        yield _sse(GatewayError(502, f"upstream stream failed: {exc.message}", code="stream_interrupted").payload())
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        # Close upstream at once (no tokens burnt for nobody) and settle even when the client left.
        async def finish():
            await stream.aclose()
            final = usage or _estimated_usage(ctx, text_chars)
            await router.settle(served, final, error=error, fallback_tokens=ctx.est_tokens)
            _log(request, ctx, served, status, final, outcome=outcome, error=error.message if error else "")

        spawn(finish())


def background_idle() -> bool:
    from analytics.services import request_logs_idle
    from analytics.sessions import session_log_idle

    return freellm.background.background_idle() and request_logs_idle() and session_log_idle()


def _with_trail(response: HttpResponse, ctx: router.RequestContext | None, served: router.Served | None = None):
    if ctx is None:
        return response
    if served is not None:
        response["X-FreeLLM-Provider"] = served.model.provider.slug
        response["X-FreeLLM-Model"] = served.model.model_id
    response["X-FreeLLM-Attempts"] = str(ctx.attempts)
    response["X-FreeLLM-Trail"] = ctx.trail_header()
    if ctx.switched:
        response[continuity.SWITCH_HEADER] = continuity.switch_header_value(ctx.switched)
    return response


def _api_key_id(request) -> int | None:
    return getattr(getattr(request, "auth", None), "id", None)


def _log(request, ctx, served, status: int, usage: Usage | None, *, outcome: str | None = None,
         error: str = "") -> None:
    api_key = getattr(request, "auth", None)
    if outcome is None:
        outcome = "ok" if status < 400 else "exhausted" if status == 429 else (
            "client_error" if status < 500 else "upstream_error")
    request_log_enqueue(
        api_key_id=getattr(api_key, "id", None),
        user_id=getattr(api_key, "user_id", None),
        endpoint=ctx.kind,
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
        latency_ms=int((time.monotonic() - ctx.started) * 1000),
        error=error[:500],
        session_id=ctx.session_id,
        switched=ctx.switched[:300],
    )


@csrf_exempt
def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    return GatewayError(404, f"Unknown endpoint: {request.method} {request.path}", code="unknown_url").response()


# Images and audio live in their own module; imported last because they reuse the plumbing above.
from routing.api_media import media  # noqa: E402

api.add_router("/", media)
