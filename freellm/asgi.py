from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (Django must be set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from analytics.routing import websocket_urlpatterns  # noqa: E402
from freellm.background import shutdown_drain  # noqa: E402
from freellm.cors import CorsMiddleware  # noqa: E402
from routing.api import mcp  # noqa: E402
from routing.api.app import API_PATH_PREFIXES  # noqa: E402
from routing.api.dialects import dialect_error_responses  # noqa: E402


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler without the middleware stack, for the API's paths only (/v1, /v1beta, /api).

    The API authenticates by its own key and uses no session, CSRF, messages or clickjacking protection;
    each built-in middleware would cost thread hops per request (about 20-30% of the gateway's CPU in
    tests/bench_gateway.py). The admin keeps the full stack.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        # ASGI only (always async): errors answered outside the API's handlers still come in the dialect's shape.
        self._middleware_chain = dialect_error_responses(convert_exception_to_response(self._get_response_async))

    async def __call__(self, scope, receive, send):
        # No ThreadSensitiveContext: Django's would start (and stop) a thread per request for the sync signal
        # receivers below. The API's rare ORM calls (an uncached key) share asgiref's one sync thread with the
        # background writers, whose tasks close their connections when done (freellm.background).
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django 5.2's ASGIHandler.handle less two thread hops per request: no request_started signal (its
        receivers reset DB connections and the query log, which the API's event-loop thread has none of),
        and the response closed in this thread (request_finished runs where nothing is initialized)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request():
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected during send_response
            return response

        # As Django does: whichever ends first, the view or a client disconnect.
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(process_request())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                with contextlib.suppress(RequestAborted):
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not tasks[1].cancelled():
            tasks[1].result().close()
        body_file.close()


api_handler = ApiASGIHandler()
# Browsers may call every API surface (/v1, /v1beta, /api) from other origins (CORS); the admin and the ops
# endpoints never (a page open in a browser on the gateway's machine must not read the loopback-only /metrics).
api_asgi_app = CorsMiddleware(api_handler)
site_asgi_app = ASGIStaticFilesHandler(django_asgi_app)


# Served without the middleware stack: the API, and the health and metrics endpoints (routing.api.ops).
_OPS_PATHS = frozenset(("/livez", "/readyz", "/metrics"))


async def http_app(scope, receive, send):
    path = scope["path"]
    if path == "/mcp":
        # The MCP server (routing.api.mcp): the SDK's own ASGI transport, authenticated by the unified key.
        await mcp.application(scope, receive, send)
        return
    if path.startswith(API_PATH_PREFIXES):
        app = api_asgi_app
    elif path in _OPS_PATHS:
        app = api_handler
    else:
        app = site_asgi_app
    await app(scope, receive, send)


# daphne serves no static files. This handler answers only STATIC_URL paths (the admin's CSS/JS, from the
# apps' static dirs, no collectstatic) and hands every other request straight to Django's async handler;
# whitenoise would instead add a sync middleware in front of the async /v1 views.
application = ProtocolTypeRouter(
    {
        "http": http_app,
        # The admin's live feed: session-cookie auth, and only pages of our own hosts may open it.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


def _hold_daphne_shutdown_for_background_work() -> None:
    """daphne has no ASGI lifespan: on SIGTERM it closes the open connections and stops the event loop,
    which would drop the requests still in flight unlogged and the work queued in the background (request
    log rows of answered requests, stream settles). A "before shutdown" trigger cancels those requests
    and waits for that work (at most a few seconds)."""
    reactor = sys.modules.get("twisted.internet.reactor")  # installed by daphne before it imports us
    if reactor is None:
        return
    from twisted.internet import defer

    def drain():
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_drain()))

    reactor.addSystemEventTrigger("before", "shutdown", drain)


_hold_daphne_shutdown_for_background_work()
