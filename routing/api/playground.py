"""The admin's playground: try a chain or model from the browser, as the logged-in user, through the real router.

GET  /admin/playground/       the page (admin session; anyone who may have API keys: members and staff)
POST /admin/playground/send   JSON {model, prompt, system?, stream?} → the answer (JSON, or SSE when streamed)

The page's requests go through ``exchange.chat`` like any client's: routing, failover, the user's limits,
settling and the request-log row, whose dialect says ``playground``. They are sent with the user's own
playground key (``api_key_playground_get_or_create``), so they count as the user's and are told apart from
their tools'; the session authenticates them, so the key's secret is never needed. The admin's session and
CSRF protection apply (the site's middleware stack; this is not under /v1).
"""

from __future__ import annotations

import json
import time
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST
from pydantic import BaseModel, Field, ValidationError

from providers.adapters.base import Usage
from routing.errors import GatewayError
from routing.services import api_key_playground_get_or_create

from . import exchange
from .dialects import Dialect
from .models import entries_for

# Who may use it: whoever may have API keys (members and staff).
PERMISSION = "routing.view_apikey"


def _allowed(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(PERMISSION))


class PlaygroundRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)
    system: str = ""
    stream: bool = True


def playground_page(request: HttpRequest) -> TemplateResponse:
    if not _allowed(request.user):
        raise PermissionDenied
    api_key = api_key_playground_get_or_create(user=request.user)
    entries = [e for e in async_to_sync(entries_for)(api_key) if e["kind"] == "chat"]
    context = {
        **admin.site.each_context(request),
        "title": "Playground",
        "chains": [e["id"] for e in entries if "chain" in e],
        "models": [e["id"] for e in entries if "chain" not in e],
    }
    return TemplateResponse(request, "admin/playground.html", context)


def _error(exc: GatewayError, request: HttpRequest | None = None) -> HttpResponse:
    """The error in OpenAI's shape; a routed request's also gets its row and trail (as the API's handler does)."""
    ctx = getattr(request, "freellm_ctx", None)
    if ctx is not None:
        exchange.log_request(request, ctx, None, exc.status, None, error=exc.message)
    return exchange.with_trail(exc.response(), ctx)


@require_POST
async def playground_send(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if not await sync_to_async(_allowed)(user):
        return _error(GatewayError(403, "Log in to the admin as a team member to use the playground.",
                                   code="insufficient_permissions"))
    try:
        payload = PlaygroundRequest.model_validate_json(request.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        return _error(GatewayError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param or None,
                                   code="invalid_value"))
    messages = [{"role": "system", "content": payload.system}] if payload.system.strip() else []
    messages.append({"role": "user", "content": payload.prompt})
    # exchange reads the key as a /v1 request's: its limits, its user, its request-log row.
    request.auth = await sync_to_async(api_key_playground_get_or_create)(user=user)
    try:
        result = await exchange.chat(request, {"model": payload.model, "messages": messages},
                                     dialect=Dialect.PLAYGROUND, stream=payload.stream)
    except GatewayError as exc:
        return _error(exc, request)
    if payload.stream:
        return exchange.stream_response(request, result, PlaygroundEncoder(result.ctx))
    usage = result.completion.get("usage") or {}
    summary = outcome_summary(result.ctx, Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0))
    return exchange.with_trail(JsonResponse({"completion": result.completion, "freellm": summary}), result)


def outcome_summary(ctx, usage: Usage) -> dict[str, Any]:
    """What the page shows under the answer: the trail, tokens and timings."""
    return {
        "request_id": ctx.request_id,
        "attempts": ctx.attempts,
        "trail": [{"route": str(s.route), "outcome": s.outcome, "ms": s.ms} for s in ctx.trail],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.prompt_tokens + usage.completion_tokens},
        "latency_ms": int((time.monotonic() - ctx.started) * 1000),
        "first_token_ms": None if ctx.first_byte_at is None else int((ctx.first_byte_at - ctx.started) * 1000),
    }


def _event(name: str | None, data: Any) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class PlaygroundEncoder:
    """Server-sent events for the page: each chat.completion.chunk as it comes, then a ``freellm`` event with
    the trail, tokens and timings (an ``error`` event instead when the upstream broke mid-answer)."""

    keepalive_seconds = None

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict) -> bytes:
        return _event(None, chunk) if chunk.get("choices") else b""

    def finish(self, usage: Usage) -> bytes:
        return _event("freellm", outcome_summary(self.ctx, usage)) + b"data: [DONE]\n\n"

    def fail(self, error: GatewayError) -> bytes:
        return _event("error", error.payload())

    def keepalive(self) -> bytes:
        return b""
