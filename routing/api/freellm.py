"""freellm's own read-only API for scripts: the routing state and a request's trail.

GET /v1/freellm/routes          every (provider, model, key label), disabled and invalid ones included, with its
                                state, cooldown and why, each window's used/limit, learned limits, last error and
                                last success. Staff keys only (403 for members).
GET /v1/freellm/requests/{id}   one request's log row and trail, by its X-FreeLLM-Request-Id; members see only
                                their own requests (404 for anyone else's). Rows are written in batches within
                                about a second of the answer.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Router

from analytics.models import RequestLog
from analytics.selectors import request_log_json
from routing.errors import GatewayError
from routing.quota import get_quota_store
from routing.route_state import all_routes, route_state_json
from routing.stats import get_stats_store, key_key

router = Router(tags=["freellm"])

# Who may read the routing state: the quota windows' view permission (staff have it, members not).
ROUTES_PERMISSION = "routing.view_quotawindow"
ALL_REQUESTS_PERMISSION = "analytics.view_all_requests"


async def _has_perm(request: HttpRequest, permission: str) -> bool:
    user = request.auth.user
    return user.is_active and await sync_to_async(user.has_perm)(permission)


@router.get("/freellm/routes", summary="Routing state: every route's health, quota windows and last outcomes")
async def routes(request: HttpRequest):
    if not await _has_perm(request, ROUTES_PERMISSION):
        raise GatewayError(403, "The routing state is for staff keys; this key's user may not read it.",
                           code="insufficient_permissions")
    rows = await sync_to_async(all_routes)()
    store = get_quota_store()
    now = time.time()
    data = [route_state_json(row, await store.status(row.route), now=now) for row in rows]
    # Live route stats of each key's route (routing/stats.py): None for a route not called lately.
    names = [key_key(row.route.provider, row.route.model, row.route.key) for row in rows]
    seen = await get_stats_store().view(names)
    for item, name in zip(data, names, strict=True):
        item["stats"] = seen[name].summary() if name in seen else None
    return {"object": "list", "data": data}


@router.get("/freellm/requests/{request_id}", summary="One request's log row and trail, by its request id")
async def request_detail(request: HttpRequest, request_id: str):
    rows = RequestLog.objects.filter(request_id=request_id)
    if not await _has_perm(request, ALL_REQUESTS_PERMISSION):
        rows = rows.filter(user_id=request.auth.user_id)
    row = await rows.afirst()
    if row is None:
        raise GatewayError(404, f"No request with id '{request_id}' that this key may see (rows are written about "
                                "a second after the answer).", code="request_not_found")
    return {"object": "freellm.request", **request_log_json(row)}
