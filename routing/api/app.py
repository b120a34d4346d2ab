"""The NinjaAPIs that serve every surface, and their error handlers: each error goes out in the request's
dialect (routing.api.dialects), logged when it stopped a request that named a model.

    api           /v1/      OpenAI's surfaces (and the other dialects that live under /v1)
    gemini_api    /v1beta/  Google's Gemini API
    ollama_api    /api/     Ollama's REST API
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from routing.errors import GatewayError

from . import (
    anthropic,
    completions,
    edge,
    embeddings,
    exchange,
    freellm,
    gemini,
    media,
    models,
    ollama,
    openai_chat,
    responses,
)
from .bodies import BodyValueError
from .dialects import error_response
from .openapi import GatewayAPI

# Paths served by the API handler (freellm/asgi.py: no middleware stack); everything else is the site's.
API_PATH_PREFIXES = ("/v1/", gemini.PREFIX, ollama.PREFIX)

api = GatewayAPI(
    title="freellm",
    version="1",
    description="OpenAI-compatible gateway over the free tiers of many LLM providers.",
    urls_namespace="v1",
    docs_url="/docs",
    auth=(_unified_auth := exchange.UnifiedKeyAuth()),
    parser=exchange.JsonBodyParser(),
)
for surface in (openai_chat, responses, completions, embeddings, models, media, anthropic, freellm):
    api.add_router("/", surface.router)

# The native front doors: their own paths outside /v1 and their own ways of sending the key; no docs page,
# since their reference is Google's and Ollama's.
_gemini_auth, _ollama_auth = gemini.GoogleKeyAuth(), ollama.OllamaAuth()
gemini_api = NinjaAPI(title="freellm: Gemini API", version="v1beta", urls_namespace="v1beta", docs_url=None,
                      openapi_url=None, auth=_gemini_auth, parser=exchange.JsonBodyParser())
gemini_api.add_router("/", gemini.router)
ollama_api = NinjaAPI(title="freellm: Ollama API", version="ollama", urls_namespace="ollama", docs_url=None,
                      openapi_url=None, auth=_ollama_auth, parser=exchange.JsonBodyParser())
ollama_api.add_router("/", ollama.router)


def auth_for_path(path: str):
    """The key check of the front door serving ``path``, for the edge (routing.api.edge) to run on the
    headers before any body is read."""
    if path.startswith(gemini.PREFIX):
        return _gemini_auth
    if path.startswith(ollama.PREFIX):
        return _ollama_auth
    return _unified_auth


def _gateway_error(request, exc: GatewayError):
    ctx = getattr(request, "freellm_ctx", None)
    if ctx is not None:
        # Whatever stopped a request that named a model (unknown model, no capable one, every route failed),
        # the request log gets its row.
        exchange.log_request(request, ctx, None, exc.status, None, error=exc.message)
    return exchange.with_trail(error_response(request, exc), ctx)


def _auth_error(request, exc):
    return error_response(request, edge.missing_key())


# ninja's first element of an error location: which part of the request it is in.
_REQUEST_PARTS = ("body", "query", "form", "file", "path", "header", "cookie")


def _validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    if loc[:1] and loc[0] in _REQUEST_PARTS:
        loc = loc[1:]
    if loc[:1] == ["payload"]:  # the name of the views' body parameter
        loc = loc[1:]
    if not loc:
        return error_response(request, GatewayError(400, "The request body must be a JSON object.",
                                                    code="invalid_value"))
    param = ".".join(loc)
    return error_response(request, GatewayError(400, f"{param}: {first.get('msg', 'invalid value')}",
                                                param=param, code="invalid_value"))


def _http_error(request, exc: HttpError):
    message = str(exc)
    if isinstance(exc.__cause__, BodyValueError):
        cause = exc.__cause__
        return error_response(request, GatewayError(400, cause.message, param=cause.param, code="invalid_value"))
    # ninja's "Cannot parse request body", raised from the parser's error: say what was wrong.
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        message = f"We could not parse the JSON body of your request: {exc.__cause__}."
    return error_response(request, GatewayError(exc.status_code, message))


def _too_big(request, exc):
    return error_response(request, edge.too_large(edge.body_limit(request.content_type or "")))


for _instance in (api, gemini_api, ollama_api):
    for _exc_class, _handler in ((GatewayError, _gateway_error), (AuthenticationError, _auth_error),
                                 (ValidationError, _validation_error), (HttpError, _http_error),
                                 (RequestDataTooBig, _too_big)):
        _instance.add_exception_handler(_exc_class, _handler)


@csrf_exempt
def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    return error_response(request, GatewayError(404, f"Unknown endpoint: {request.method} {request.path}",
                                                code="unknown_url"))
