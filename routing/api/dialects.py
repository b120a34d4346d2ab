"""Which dialect a request speaks, and how each dialect shapes an error.

Every error of a request (bad input, a bad key, no route, a wrong method, a bug) is a ``GatewayError`` until
the last moment, when the dialect of the request renders it: OpenAI's ``{"error": {...}}`` by default, and
whatever a dialect module registered for its paths (Anthropic's envelope on /v1/messages, Google's on
/v1beta, Ollama's on /api). The dialect is known from the path, so errors raised before any view code ran
(validation, authentication, 405) come in the right shape too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from enum import StrEnum

from django.http import HttpRequest, HttpResponse

from routing.errors import GatewayError


class Dialect(StrEnum):
    OPENAI = "openai"
    RESPONSES = "responses"
    COMPLETIONS = "completions"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OLLAMA = "ollama"
    # Not a wire: the admin's playground (routing/api/playground.py), so the request log tells its rows apart.
    PLAYGROUND = "playground"


ErrorRenderer = Callable[[GatewayError], HttpResponse]

_renderers: dict[Dialect, ErrorRenderer] = {Dialect.OPENAI: GatewayError.response}
# (path prefix, dialect), longest prefix first.
_prefixes: list[tuple[str, Dialect]] = []


def register_dialect(
    dialect: Dialect, *, path_prefixes: tuple[str, ...] = (), render_error: ErrorRenderer | None = None
) -> None:
    """Called once by each dialect module at import: the paths it serves and, if not OpenAI's, its error shape."""
    if render_error is not None:
        _renderers[dialect] = render_error
    _prefixes.extend((prefix, dialect) for prefix in path_prefixes)
    _prefixes.sort(key=lambda item: -len(item[0]))


def dialect_for_path(path: str) -> Dialect:
    for prefix, dialect in _prefixes:
        if path.startswith(prefix):
            return dialect
    return Dialect.OPENAI


def dialect_of(request: HttpRequest) -> Dialect:
    dialect = getattr(request, "freellm_dialect", None)
    if dialect is None:
        dialect = request.freellm_dialect = dialect_for_path(request.path)
    return dialect


def error_response(request: HttpRequest, exc: GatewayError) -> HttpResponse:
    dialect = dialect_of(request)
    return _renderers.get(dialect, GatewayError.response)(exc)


def error_response_for_path(path: str, exc: GatewayError) -> HttpResponse:
    """For an answer given before Django built a request (the edge in front of daphne)."""
    response = _renderers.get(dialect_for_path(path), GatewayError.response)(exc)
    response["X-FreeLLM-Request-Id"] = uuid.uuid4().hex
    return response


def dialect_error_responses(get_response):
    """Wrap the API's handler chain (async): an error answered outside the API's own handlers, such as
    ninja's 405 for a wrong method or Django's 500 page for a bug, goes out in the request's dialect too."""

    async def respond(request):
        response = await get_response(request)
        if "X-FreeLLM-Request-Id" not in response:
            # Answers of a routed request carry the id of their request-log row; every other answer one of its
            # own, so that a client can always quote one.
            response["X-FreeLLM-Request-Id"] = uuid.uuid4().hex
        if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        if response.status_code == 405:
            allowed = response.get("Allow", "")
            message = f"{request.method} is not allowed on {request.path}; use {allowed}."
            error = GatewayError(405, message, code="method_not_allowed", headers={"Allow": allowed})
        elif response.status_code >= 500:
            error = GatewayError(response.status_code, "The gateway failed on this request; the error is logged.",
                                 code="internal_error")
        else:
            error = GatewayError(response.status_code, response.reason_phrase)
        response = error_response(request, error)
        response["X-FreeLLM-Request-Id"] = uuid.uuid4().hex
        return response

    return respond
