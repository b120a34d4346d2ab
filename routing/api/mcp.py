"""The MCP server at /mcp: read-only tools with which an agent asks the gateway what it may use and how it went.

Streamable HTTP in the SDK's stateless JSON mode (no session to remember: any gateway process answers any
request), authenticated by the unified key like /v1 (``Authorization: Bearer fl-...``, else 401). Served by
freellm.asgi without Django's middleware stack. Tools:

    list_models       the chains, canonical ids and models this key may use, with capabilities and headroom
    route_health      each route's breaker state, cooldown and headroom (staff: all; members: their models')
    usage_summary     this key's requests and tokens today and this month (staff: every user's too)
    explain_request   one request's trail by its X-FreeLLM-Request-Id (members: only their own)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from starlette.requests import Request

from analytics.selectors import request_log_json, request_log_of, usage_summary, user_sees_all_requests
from routing.auth import authenticate_request
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.models import ApiKey
from routing.selectors_health import models_named, route_health_rows, usable_now

from .models import entries_for

# Who sees every route (the routing-state API's rule): the quota windows' view permission, which staff have.
ROUTES_PERMISSION = "routing.view_quotawindow"

server = FastMCP(
    "freellm",
    instructions="freellm is a gateway over the free tiers of many LLM providers. These tools tell which chains "
                 "and models your key may use, how healthy their routes are, what you used, and why a request "
                 "went where it went.",
    stateless_http=True,
    json_response=True,
    # The SDK's DNS-rebinding guard (Host/Origin allow-list) protects servers that trust whoever reaches them;
    # this one answers only a request that carries a unified key, which a rebinding page never has.
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)


def _api_key(ctx: Context) -> ApiKey:
    """The key the request was authenticated with (put into the ASGI scope by ``application``)."""
    return ctx.request_context.request.scope["state"]["freellm_api_key"]


async def _may_see_all_routes(api_key: ApiKey) -> bool:
    user = api_key.user
    return user.is_active and await sync_to_async(user.has_perm)(ROUTES_PERMISSION)


@server.tool(annotations=READ_ONLY)
async def list_models(ctx: Context, kind: str | None = None) -> dict[str, Any]:
    """The chains, canonical model ids and models this key may use (ask for one of them as `model`), with
    what they can do (tools, vision, JSON output, context window) and their headroom now: how many routes
    could serve a request this moment and the best share of quota left (0..1). `kind`: chat, embedding, ..."""
    api_key = _api_key(ctx)
    cfg = await get_routing_config()
    data = []
    for entry in await entries_for(api_key):
        if kind and entry["kind"] != kind:
            continue
        models = models_named(cfg, entry["id"])
        rows = await route_health_rows(models)
        usable = [row for row in rows if usable_now(row)]
        windows = [m.context_window for m in models if m.context_window]
        data.append({
            "id": entry["id"],
            "type": "chain" if "chain" in entry else "canonical" if "providers" in entry else "model",
            "kind": entry["kind"],
            **{k: entry[k] for k in ("chain", "providers") if k in entry},
            # A chain or canonical id can do what one of its members can: the router picks a capable one.
            "capabilities": {"tools": any(m.supports_tools for m in models),
                             "vision": any(m.supports_vision for m in models),
                             "json": any(m.supports_json for m in models),
                             "context_window": max(windows) if windows else None},
            "headroom": {"usable_routes": len(usable), "routes": len(rows),
                         "best": max((row["headroom"] for row in usable), default=0.0)},
        })  # fmt: skip
    return {"models": data}


@server.tool(annotations=READ_ONLY)
async def route_health(ctx: Context) -> dict[str, Any]:
    """Every route (provider/model/key label) behind what this key may use: breaker state (closed, open,
    half_open, key_invalid), cooldown, consecutive failures, headroom (0..1) and each quota window's
    used/limit. Staff keys see every route of the gateway."""
    api_key = _api_key(ctx)
    cfg = await get_routing_config()
    if await _may_see_all_routes(api_key):
        models = cfg.models
    else:
        seen: dict[str, Any] = {}
        for entry in await entries_for(api_key):
            for model in models_named(cfg, entry["id"]):
                seen.setdefault(model.name, model)
        models = list(seen.values())
    rows = await route_health_rows(models)
    return {"routes": rows, "usable": sum(usable_now(row) for row in rows)}


# Named for the wire; the function's own name is taken by the selector it calls.
@server.tool(name="usage_summary", annotations=READ_ONLY)
async def usage_summary_of_key(ctx: Context) -> dict[str, Any]:
    """This key's requests and tokens (prompt, completion, total) and failed requests, today and this month
    (UTC). Staff keys also get every user's, busiest first."""
    api_key = _api_key(ctx)
    per_user = await sync_to_async(user_sees_all_requests)(api_key.user)
    return await sync_to_async(usage_summary)(api_key_id=api_key.id, per_user=per_user)


@server.tool(annotations=READ_ONLY)
async def explain_request(ctx: Context, request_id: str) -> dict[str, Any]:
    """Why a request went where it went: its log row by the id of its X-FreeLLM-Request-Id header (every route
    tried with its outcome and time, who answered, tokens, latency, error). Members see only their own
    requests; rows are written about a second after the answer."""
    api_key = _api_key(ctx)
    row = await sync_to_async(request_log_of)(request_id=request_id.strip(), user=api_key.user)
    if row is None:
        raise ToolError(f"No request with id '{request_id}' that this key may see (rows are written about a second "
                        "after the answer).")
    return request_log_json(row)


# --- the ASGI app -------------------------------------------------------------------------------------------

# The session manager's task group must outlive every request. daphne runs no ASGI lifespan, so it starts with
# the first request of the process and lives on the process's loop.
_started: asyncio.Future | None = None
_runner: asyncio.Task | None = None


async def _session_manager_running() -> None:
    global _started, _runner
    if _started is None:
        _started = asyncio.get_running_loop().create_future()
        manager = server.session_manager

        async def run() -> None:
            async with manager.run():
                _started.set_result(None)
                await asyncio.Event().wait()

        _runner = asyncio.create_task(run())
    await _started


async def _unauthorized(send, refusal: GatewayError | None = None) -> None:
    """401; or what the key check answered instead (a throttled address 429, the database down 503)."""
    message = refusal.message if refusal else "Invalid or missing API key. Send `Authorization: Bearer <key>`."
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", b'Bearer realm="freellm"')]
    headers += [(name.lower().encode(), value.encode()) for name, value in (refusal.headers if refusal else {}).items()]
    await send({"type": "http.response.start", "status": refusal.status if refusal else 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send) -> None:
    """/mcp: the unified key's check, then the SDK's streamable HTTP transport."""
    # Outside Django's handler nothing else retires database connections that are too old or broken (its
    # request_started / request_finished signals do that for /v1 and the admin).
    await sync_to_async(close_old_connections)()
    try:
        try:
            api_key = await authenticate_request(Request(scope))
        except GatewayError as exc:
            await _unauthorized(send, exc)
            return
        if api_key is None:
            await _unauthorized(send)
            return
        # The tools read it from the request the SDK hands them (the same scope).
        scope["state"] = {**scope.get("state", {}), "freellm_api_key": api_key}
        await _session_manager_running()
        await server.session_manager.handle_request(scope, receive, send)
    finally:
        await sync_to_async(close_old_connections)()


# Creates the session manager (stateless, JSON answers) that `application` hands requests to.
server.streamable_http_app()
