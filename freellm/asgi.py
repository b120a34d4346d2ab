from __future__ import annotations

import asyncio
import gc
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
from routing.api.app import API_PATH_PREFIXES, auth_for_path  # noqa: E402
from routing.api.dialects import dialect_error_responses  # noqa: E402
from routing.api.edge import BodyGuard  # noqa: E402


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

        # As Django does: whichever ends first, the view or a client disconnect. Unlike Django, no exception is
        # raised (and caught) in this frame: its traceback would hold this frame, whose ``tasks`` hold the task
        # that holds the exception, and that cycle kept each request's objects (its body included) alive until a
        # full garbage collection.
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(process_request())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))  # the view may handle its cancellation
        errors = [task.exception() for task in tasks if not task.cancelled()]
        failed = [error for error in errors if error is not None and not isinstance(error, RequestAborted)]
        if failed:
            body_file.close()
            raise failed[0]
        viewed = tasks[1]
        if not viewed.cancelled() and viewed.exception() is None:
            viewed.result().close()
        body_file.close()


api_handler = ApiASGIHandler()
# Browsers may call every API surface (/v1, /v1beta, /api) from other origins (CORS); the admin and the ops
# endpoints never (a page open in a browser on the gateway's machine must not read the loopback-only /metrics).
# Inside it, bodies refused before they are read (size, key, multipart boundary), large JSON parsed off the loop.
api_asgi_app = CorsMiddleware(BodyGuard(api_handler, auth_for_path=auth_for_path))
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


async def lifespan(scope, receive, send):
    """ASGI lifespan (uvicorn; daphne has none, see below): at shutdown, the requests still in flight and the
    background work (request log rows, stream settles) are drained before the process ends."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_drain()
            await send({"type": "lifespan.shutdown.complete"})
            return


# daphne serves no static files. This handler answers only STATIC_URL paths (the admin's CSS/JS, from the
# apps' static dirs, no collectstatic) and hands every other request straight to Django's async handler;
# whitenoise would instead add a sync middleware in front of the async /v1 views.
application = ProtocolTypeRouter(
    {
        "http": http_app,
        # The admin's live feed: session-cookie auth, and only pages of our own hosts may open it.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": lifespan,
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


def _refuse_daphne_bodies_before_reading() -> None:
    """daphne reads a request's whole body before the application sees the request, so the API's edge
    (routing.api.edge.BodyGuard) would come too late for a body that is too large or comes without a valid
    key. Its request class (daphne.http_protocol.WebRequest, the one its HTTP channel is built with) gets
    the same checks as soon as the headers are in: a Content-Length above the limit, or more body bytes
    than the limit, is answered 413; for the API, reading stops until the key is checked (401 without one).
    """
    if "twisted.internet.reactor" not in sys.modules:
        return
    from daphne import http_protocol

    if getattr(http_protocol.WebRequest, "freellm_guarded", False):
        return
    http_protocol.WebRequest = _guarded_web_request(http_protocol.WebRequest)
    _mark_checked_scopes()


def _mark_checked_scopes() -> None:
    """The scope of a request whose key the guarded request class checked says so, for BodyGuard to skip
    its own check (daphne builds the scope in Server.create_application, from the request)."""
    from daphne.server import Server

    from routing.api.edge import KEY_CHECKED_SCOPE_KEY

    create = Server.create_application

    def create_application(self, protocol, scope):
        if getattr(protocol, "_freellm_key_checked", False):
            scope[KEY_CHECKED_SCOPE_KEY] = True
        return create(self, protocol, scope)

    Server.create_application = create_application


def _guarded_web_request(base):
    import io

    from routing.api.edge import body_limit, edge_refusal, too_large
    from routing.auth import bearer_token, recently_valid

    class GuardedWebRequest(base):
        freellm_guarded = True
        _freellm_refused = False
        _freellm_received = 0
        _freellm_limit = 0
        _freellm_checking = False  # the key check is running: body reading paused, processing held back
        _freellm_held = False  # the whole request came in while the key was being checked
        # edge_refusal passed, or the key answered lately: the application's BodyGuard need not check again
        _freellm_key_checked = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # twisted would parse every POST's Content-Type with the email package (about 3% of the gateway's
            # CPU per request) and a multipart body whole, for request.args, which daphne never reads.
            self._parsePOSTFormSubmission = False

        def gotLength(self, length):
            super().gotLength(length)
            path = (getattr(self.channel, "_path", b"") or b"").split(b"?", 1)[0].decode("latin-1")
            method = (getattr(self.channel, "_command", b"") or b"").decode("latin-1")
            content_type = (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
            self._freellm_limit = body_limit(content_type)
            if length is not None and length > self._freellm_limit:
                self._freellm_refuse(too_large(self._freellm_limit), path)
                return
            if path.startswith(API_PATH_PREFIXES) and method in ("POST", "PUT", "PATCH"):
                if not content_type.startswith("multipart/") and self._freellm_known_key():
                    # Most requests: a key that answered lately. The body is read at once, as for any request
                    # (the front door authenticates it as always); no task and no pause for the check.
                    self._freellm_key_checked = True
                    return
                # Read no body until the key is known good.
                self._freellm_checking = True
                self.channel.transport.pauseProducing()
                query = (getattr(self.channel, "_path", b"") or b"").partition(b"?")[2]
                asyncio.ensure_future(self._freellm_check_key(path, query, method, content_type))

        def _freellm_known_key(self) -> bool:
            # Where the front doors take a key from the headers (routing.auth, gemini.GoogleKeyAuth).
            def first(name: bytes) -> str:
                return (self.requestHeaders.getRawHeaders(name) or [b""])[0].decode("latin-1")

            candidates = (bearer_token(first(b"authorization")), first(b"x-api-key"), first(b"x-goog-api-key"))
            return any(recently_valid(raw) for raw in candidates if raw)

        async def _freellm_check_key(self, path: str, query: bytes, method: str, content_type: str) -> None:
            headers = [(name.lower(), value) for name, values in self.requestHeaders.getAllRawHeaders()
                       for value in values]
            peer = self.channel.transport.getPeer()
            scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": query,
                     "headers": headers, "client": (getattr(peer, "host", ""), getattr(peer, "port", 0))}
            try:
                refusal = await edge_refusal(scope, content_type, auth_for_path)
            finally:
                self._freellm_checking = False
            if self._freellm_refused:
                return
            if refusal is not None:
                self._freellm_refuse(refusal, path)
                return
            self._freellm_key_checked = True
            if self._freellm_held:
                # The body had come in with the headers: hand the request on now (twisted paused reading
                # until its answer is out, as for any request).
                super().process()
            else:
                self.channel.transport.resumeProducing()

        def handleContentChunk(self, data):
            if self._freellm_refused:
                return
            self._freellm_received += len(data)
            if self._freellm_received > self._freellm_limit:
                path = (getattr(self.channel, "_path", b"") or b"").split(b"?", 1)[0].decode("latin-1")
                self._freellm_refuse(too_large(self._freellm_limit), path)
                return
            super().handleContentChunk(data)

        def process(self):
            if self._freellm_refused:
                return None
            if self._freellm_checking:
                self._freellm_held = True
                return None
            return super().process()

        def _freellm_refuse(self, error, path: str) -> None:
            from routing.api.dialects import error_response_for_path

            self._freellm_refused = True
            self.content = io.BytesIO()
            response = error_response_for_path(path, error)
            head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
            head += [f"{name}: {value}" for name, value in response.items()]
            head += [f"Content-Length: {len(response.content)}", "Connection: close", "", ""]
            transport = self.channel.transport
            transport.write("\r\n".join(head).encode("latin-1") + response.content)
            transport.resumeProducing()
            transport.loseConnection()

    return GuardedWebRequest


_refuse_daphne_bodies_before_reading()


def _quiet_garbage_collector() -> None:
    """What is loaded by now (Django, the apps, the libraries: objects that live as long as the process)
    leaves the collector's view, so that a collection scans only what requests made (the benchmark prints
    the collector's time per request: at c=32 0.7-0.8 ms without this, 0.5-0.6 ms with it).

    Young collections come every 5,000 allocations instead of 700: a request in flight allocates thousands
    of objects that die with it, and at 700 they were scanned several times over and promoted until full
    collections followed (c=32: 0.16-0.24 ms of GC per request and 1-2 full collections per 1,000 requests;
    at 5,000, 0.07 ms and none). A larger young generation cost RSS only while requests left reference
    cycles (tests/api/test_request_garbage.py): their garbage then waited for full collections that hardly
    ever came (336 MiB after 1,000 100 KB prompts at 10,000)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, *gc.get_threshold()[1:])


_quiet_garbage_collector()
