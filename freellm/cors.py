"""CORS for the API surfaces: a small ASGI wrapper around the API handler (never around the admin).

Why not django-cors-headers: the API handler (freellm.asgi.ApiASGIHandler) runs without Django's middleware
stack, and the headers clients send come in families (``openai-*``, ``x-stainless-*``) that a fixed list of
allowed headers cannot express; here a preflight is answered before Django is entered at all (no thread hop)
and requested headers are matched against patterns. The API takes bearer keys, never cookies, so credentials
are not allowed and ``*`` is a safe default origin (FREELLM_CORS_ORIGINS).
"""

from __future__ import annotations

import fnmatch

from django.conf import settings

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
# Request headers a browser client may send (lower case, fnmatch patterns): the unified key (either header),
# the JSON body, and what the official SDKs add (Anthropic versions and betas, OpenAI's organisation/project,
# the Stainless SDK telemetry headers, Gemini's key header), plus our sticky-session id.
ALLOWED_HEADERS = (
    "authorization", "x-api-key", "content-type", "accept", "anthropic-version", "anthropic-beta",
    "anthropic-dangerous-direct-browser-access", "x-session-id", "openai-*", "x-stainless-*", "x-goog-api-key",
    "x-goog-api-client", "user-agent",
)  # fmt: skip
# Response headers browser code may read: what happened to the request, and when to retry.
EXPOSED_HEADERS = (
    "X-FreeLLM-Provider", "X-FreeLLM-Model", "X-FreeLLM-Attempts", "X-FreeLLM-Trail", "X-FreeLLM-Switched",
    "X-FreeLLM-Chain", "X-FreeLLM-Alias", "X-FreeLLM-Request-Id", "Retry-After",
)  # fmt: skip
# Browsers cache a preflight this long (seconds; Chromium caps it at 7200).
MAX_AGE = "600"


def header_allowed(name: str) -> bool:
    name = name.strip().lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOWED_HEADERS)


def allowed_origin(origin: str) -> str | None:
    """The Access-Control-Allow-Origin value for this request's Origin, None when it is not allowed."""
    origins = settings.FREELLM_CORS_ORIGINS
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


class CorsMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin:
            await self.app(scope, receive, send)
            return
        allow = allowed_origin(origin)
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(send, allow, headers.get(b"access-control-request-headers", b"").decode("latin-1"))
            return
        if allow is None:
            await self.app(scope, receive, send)
            return
        cors = [
            (b"access-control-allow-origin", allow.encode("latin-1")),
            (b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode()),
        ]
        if allow != "*":
            cors.append((b"vary", b"Origin"))

        async def send_with_cors(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send, allow: str | None, requested_headers: str) -> None:
    """204 with what may be sent, or 403 for an origin that is not allowed (no CORS headers: the browser
    refuses the call)."""
    vary = b"Origin, Access-Control-Request-Headers"
    if allow is None:
        body = b'{"error": {"message": "This origin may not call the API (FREELLM_CORS_ORIGINS).", ' \
               b'"type": "permission_error", "param": null, "code": "cors_origin_not_allowed"}}'
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"vary", vary),
        ]})
        await send({"type": "http.response.body", "body": body})
        return
    # Echo the requested headers that are allowed; the browser refuses the call if one it needs is missing.
    granted = [h.strip() for h in requested_headers.split(",") if h.strip() and header_allowed(h)]
    await send({"type": "http.response.start", "status": 204, "headers": [
        (b"access-control-allow-origin", allow.encode("latin-1")),
        (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
        (b"access-control-allow-headers", ", ".join(granted).encode("latin-1")),
        (b"access-control-max-age", MAX_AGE.encode()),
        (b"vary", vary),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})
