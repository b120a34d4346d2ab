"""Google's native Gemini API at /v1beta, for Gemini CLI, Qwen Code and the google-genai SDKs.

    GET  /v1beta/models                              chains and models as Model resources (pageSize, pageToken)
    GET  /v1beta/models/{model}
    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent   ?alt=sse: SSE events; without: one JSON array
    POST /v1beta/models/{model}:countTokens              the gateway's estimate, no upstream call
    POST /v1beta/models/{model}:embedContent
    POST /v1beta/models/{model}:batchEmbedContents

``{model}`` is whatever ``model`` is elsewhere (a chain, ``provider/model`` with its slash as it is or
URL-encoded, a bare model id), with or without Google's ``models/`` prefix. The key is the unified key, in
``x-goog-api-key`` (what the SDKs send), ``?key=`` or ``Authorization: Bearer``. Translation lives in
``gemini_wire``; routing, failover, stickiness and the request log are the exchange's.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router

from routing import router as routing_router
from routing.auth import authenticate_key, raw_key_from
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.tokens import estimate_request_tokens

from . import exchange
from . import gemini_wire as wire
from .dialects import Dialect, register_dialect
from .models import listed_models

PREFIX = "/v1beta/"
router = Router(tags=["gemini"])


def render_error(exc: GatewayError) -> HttpResponse:
    response = HttpResponse(json.dumps(wire.error_payload(exc)), status=exc.status, content_type="application/json")
    for name, value in exc.headers.items():
        response[name] = value
    return response


register_dialect(Dialect.GEMINI, path_prefixes=(PREFIX,), render_error=render_error)


class GoogleKeyAuth(exchange.UnifiedKeyAuth):
    """The unified key where Google's clients put theirs: ``x-goog-api-key``, ``?key=``, or a Bearer token."""

    async def authenticate(self, request: HttpRequest, token: str):
        raw = request.headers.get("x-goog-api-key") or request.GET.get("key") or raw_key_from(request)
        api_key = await authenticate_key(raw, request)
        if api_key is None:
            raise GatewayError(401, "API key not valid: send your freellm key in `x-goog-api-key` (the Gemini "
                                    "SDKs' GEMINI_API_KEY), `?key=` or `Authorization: Bearer`.",
                               code="invalid_api_key")
        return api_key


class GenerateBody(exchange.OpenSchema):
    """Any JSON object; gemini_wire checks the fields and names the one that is wrong."""


# --- models ------------------------------------------------------------------------------------------


async def _entries() -> list[dict]:
    return [wire.model_entry(item.name, kind=item.kind, description=item.description,
                             context_window=item.context_window) for item in await listed_models()]


@router.get("/models", summary="List models")
async def list_models(request: HttpRequest, pageSize: int = 0, pageToken: str = ""):  # noqa: N803 (Google's names)
    entries = await _entries()
    start = int(pageToken) if pageToken.isdigit() else 0
    end = start + pageSize if pageSize > 0 else len(entries)
    page: dict = {"models": entries[start:end]}
    if end < len(entries):
        page["nextPageToken"] = str(end)
    return page


@router.get("/models/{path:name}", summary="Get a model")
async def get_model(request: HttpRequest, name: str):
    wanted = wire.model_name(name)
    for entry in await _entries():
        if entry["baseModelId"] == wanted:
            return entry
    raise GatewayError(404, f"models/{wanted} is not found: it is no chain, model or model id of this gateway",
                       code="model_not_found", param="model")


# --- generation, tokens, embeddings --------------------------------------------------------------------


# The same path as get_model (one path, one view per method): the method follows the model's last colon.
@router.post("/models/{path:name}", summary="generateContent, streamGenerateContent, countTokens, "
                                             "embedContent, batchEmbedContents")
async def model_method(request: HttpRequest, name: str, payload: GenerateBody, alt: str = ""):
    model, method = wire.split_model_method(name)
    body = payload.to_upstream()
    if method is None:
        raise GatewayError(404, f"Unknown method on models/{model}: use one of "
                                f"{', '.join(wire.CHAT_METHODS + wire.EMBEDDING_METHODS)}", code="unknown_url")
    if method in wire.EMBEDDING_METHODS:
        batch = method == "batchEmbedContents"
        answer, ctx, served = await exchange.embeddings(
            request, wire.embedding_request(body, model, batch=batch), dialect=Dialect.GEMINI)
        return exchange.with_trail(JsonResponse(wire.embedding_response(answer, batch=batch)), ctx, served)
    if method == "countTokens":
        return await _count_tokens(request, body, model)

    chat_body = wire.to_chat_request(body, model)
    config = wire.camelized(body).get("generationConfig") or {}
    thinking = config.get("thinkingConfig") if isinstance(config, dict) else None
    include_thoughts = bool(isinstance(thinking, dict) and thinking.get("includeThoughts"))
    if method == "generateContent":
        result = await exchange.chat(request, chat_body, dialect=Dialect.GEMINI, stream=False)
        answer = wire.from_completion(result.completion, model=result.served.model.name,
                                      include_thoughts=include_thoughts)
        return exchange.with_trail(JsonResponse(answer), result)
    sse = alt == "sse"
    result = await exchange.chat(request, chat_body, dialect=Dialect.GEMINI, stream=True)
    encoder = wire.StreamEncoder(model=result.served.model.name, sse=sse, include_thoughts=include_thoughts)
    return exchange.stream_response(request, result, encoder,
                                    content_type="text/event-stream" if sse else "application/json")


async def _count_tokens(request: HttpRequest, body: dict, model: str) -> JsonResponse:
    request.freellm_dialect = Dialect.GEMINI
    chat_body = wire.count_tokens_request(body, model)
    # The model must exist like for generateContent (404 otherwise); the count is the gateway's own estimate,
    # the one quotas are reserved by, so no upstream call is spent on it.
    routing_router.resolve(await get_routing_config(), model, "chat")
    return JsonResponse({"totalTokens": estimate_request_tokens(chat_body, output_reserve=0)})
