"""The API's ASGI edge, in front of Django: a request body is refused before it is read or buffered.

For every request with a body (POST, PUT, PATCH):

1. a declared ``Content-Length`` above the endpoint's limit is answered 413 at once;
2. the unified key is checked from the headers alone: a missing or wrong key is answered 401 (a throttled
   address 429, a database outage 503) before one byte of the body is read;
3. the body is read up to the limit and no further (a chunked body is cut off there with 413);
4. a multipart body must name its boundary (400 otherwise);
5. a large JSON body is parsed in a worker thread, so that one big request does not stall the event loop
   for every other; the parsed value is handed to ``exchange.JsonBodyParser`` through the ASGI scope.

Limits: ``FREELLM_MAX_JSON_BODY_BYTES`` for JSON endpoints, ``FREELLM_MAX_BODY_BYTES`` for uploads
(multipart). Errors come in the dialect of the request's path.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse

from routing.errors import GatewayError

from .bodies import PARSED_JSON_SCOPE_KEY, parse_json
from .dialects import error_response

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# Bodies above this are parsed off the event loop (a thread hop costs more than parsing a small one).
PARSE_IN_THREAD_BYTES = 256 * 1024


# Set in the scope by a server that ran ``edge_refusal`` itself before reading the body (daphne, through
# freellm/asgi.py), so the key is not checked twice.
KEY_CHECKED_SCOPE_KEY = "freellm.edge_checked"

# Room for a multipart body's own framing and small fields around a file of FREELLM_MAX_BODY_BYTES (the
# upload endpoint checks the file's own size against the setting and names the field).
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def body_limit(content_type: str) -> int:
    if content_type.startswith("multipart/"):
        return settings.FREELLM_MAX_BODY_BYTES + MULTIPART_OVERHEAD_BYTES
    return settings.FREELLM_MAX_JSON_BODY_BYTES


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is too large: at most {limit} bytes here.", code="request_too_large")


def missing_key() -> GatewayError:
    return GatewayError(401, "Invalid or missing API key. Send `Authorization: Bearer <key>`.",
                        code="invalid_api_key")


# The key check of the front door serving a path (routing.api.app.auth_for_path): an object with ninja's
# ``async authenticate(request, token)``.
AuthForPath = Callable[[str], Any]


class BodyGuard:
    """ASGI middleware around the API's handler (see the module docstring)."""

    def __init__(self, app, *, auth_for_path: AuthForPath) -> None:
        self.app = app
        self.auth_for_path = auth_for_path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        content_type, content_length = _header(scope, b"content-type"), _header(scope, b"content-length")
        limit = body_limit(content_type)
        try:
            declared = int(content_length or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            refusal = too_large(limit)
        elif scope.get(KEY_CHECKED_SCOPE_KEY):
            refusal = None  # the server checked the key (and the multipart header) before it read the body
        else:
            refusal = await edge_refusal(scope, content_type, self.auth_for_path)
        if refusal is None:
            try:
                body = await _read_body(receive, limit)
            except GatewayError as exc:
                refusal = exc
        if refusal is not None:
            await _send(send, error_response(_headers_only(scope), refusal))
            return
        if body is None:
            return  # the client went away
        if len(body) > PARSE_IN_THREAD_BYTES and "json" in content_type:
            scope = {**scope, PARSED_JSON_SCOPE_KEY: await asyncio.to_thread(_parse_json, body)}
        await self.app(scope, _replay(body, receive), send)


def _header(scope, name: bytes) -> str:
    """A request header's value from the ASGI scope, repeated ones joined as Django joins them (no request
    object is built for the two headers every API request needs here)."""
    values = [value for key, value in scope["headers"] if key == name]
    return b",".join(values).decode("latin-1")


def _headers_only(scope) -> ASGIRequest:
    # Django reads the body from this file, which stays empty: the headers are what the checks need.
    return ASGIRequest(scope, io.BytesIO())


async def edge_refusal(scope, content_type: str, auth_for_path: AuthForPath) -> GatewayError | None:
    """What to answer instead of reading the body (a bad multipart header, no valid key), or None. Also
    used by the daphne hook in freellm/asgi.py."""
    if content_type.startswith("multipart/") and "boundary=" not in content_type:
        return GatewayError(400, "A multipart body needs a boundary in its Content-Type header.",
                            param="file", code="invalid_multipart")
    request = _headers_only(scope)
    try:
        # The same check as the front door's own (Bearer, x-goog-api-key, Ollama's keyless user, ...).
        if await auth_for_path(scope["path"]).authenticate(request, "") is None:
            return missing_key()
    except GatewayError as exc:
        return exc  # its own 401, a throttled address (429), the database unavailable (503)
    return None


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """The body as one message, then the client's own messages (Django listens for its disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _parse_json(body: bytes) -> tuple[Any, ValueError | None]:
    try:
        return parse_json(body), None
    except ValueError as exc:
        return None, exc


async def _send(send, response: HttpResponse) -> None:
    if "X-FreeLLM-Request-Id" not in response:
        # Like every API answer (routing.api.dialects), so that a client can always quote one.
        response["X-FreeLLM-Request-Id"] = uuid.uuid4().hex
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    headers.append((b"content-length", str(len(response.content)).encode()))
    # The body was not read: the connection cannot be reused for another request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
