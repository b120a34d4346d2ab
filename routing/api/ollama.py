"""Ollama's REST API at /api, for editors and apps that only talk to a local Ollama (Zed, JetBrains AI, Open
WebUI's Ollama mode, Raycast, ...).

    GET  /api/tags        chains and models as local models (``auto:latest``)
    GET  /api/version     (no key needed, like Ollama)
    POST /api/show        capabilities (completion, tools, vision / embedding) and the context length
    POST /api/chat        streamed as NDJSON unless ``"stream": false`` (Ollama's default)
    POST /api/generate
    POST /api/embed       and the older POST /api/embeddings

The key is the unified key as ``Authorization: Bearer``. Editors that cannot send one may be let in from
this machine as the user named by FREELLM_OLLAMA_KEYLESS_USER (off by default). Translation lives in
``ollama_wire``; routing, failover, stickiness and the request log are the exchange's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router
from pydantic import Field, StrictBool

from routing import router as routing_router
from routing.auth import authenticate_key, is_from_this_machine, keyless_identity, raw_key_from
from routing.config import get_routing_config
from routing.errors import GatewayError

from . import exchange
from . import ollama_wire as wire
from .dialects import Dialect, register_dialect
from .models import listed_models

log = logging.getLogger(__name__)

PREFIX = "/api/"
router = Router(tags=["ollama"])


def render_error(exc: GatewayError) -> HttpResponse:
    response = HttpResponse(json.dumps(wire.error_payload(exc)), status=exc.status, content_type="application/json")
    for name, value in exc.headers.items():
        response[name] = value
    return response


register_dialect(Dialect.OLLAMA, path_prefixes=(PREFIX,), render_error=render_error)


class OllamaAuth(exchange.UnifiedKeyAuth):
    """The unified key as a Bearer token; without one, the keyless user for requests from this machine."""

    async def authenticate(self, request: HttpRequest, token: str):
        raw = raw_key_from(request)
        username = settings.FREELLM_OLLAMA_KEYLESS_USER
        if raw is None and username and is_from_this_machine(request):
            api_key = await keyless_identity(username)
            if api_key is None:
                log.warning("FREELLM_OLLAMA_KEYLESS_USER=%r names no active user", username)
                raise GatewayError(401, "FREELLM_OLLAMA_KEYLESS_USER names no active user of this gateway",
                                   code="invalid_api_key")
            return api_key
        api_key = await authenticate_key(raw, request)
        if api_key is None:
            raise GatewayError(401, "invalid or missing API key: send your freellm key as `Authorization: Bearer "
                                    "<key>` (the ollama clients take headers=...)", code="invalid_api_key")
        return api_key


class ModelBody(exchange.OpenSchema):
    model: str = Field(min_length=1)
    stream: StrictBool | None = None


class ShowBody(exchange.OpenSchema):
    # Older clients send `name`.
    model: str | None = None
    name: str | None = None


# --- models --------------------------------------------------------------------------------------------


@router.get("/version", auth=None, summary="The Ollama API version this imitates")
async def version(request: HttpRequest):
    return {"version": wire.OLLAMA_VERSION}


@router.get("/tags", summary="List chains and models as local models")
async def tags(request: HttpRequest):
    modified = wire.now_iso()
    return {"models": [wire.tags_entry(item.name, family=item.owner, modified_at=modified)
                       for item in await listed_models()]}


@router.post("/show", summary="Describe a chain or model")
async def show(request: HttpRequest, payload: ShowBody):
    wanted = wire.model_name(payload.model or payload.name)
    for item in await listed_models():
        if item.name == wanted:
            capabilities = ["embedding"] if item.kind == "embedding" else (
                ["completion"] + ["tools"] * item.supports_tools + ["vision"] * item.supports_vision)
            return wire.show_response(item.name, family=item.owner, context_window=item.context_window,
                                      capabilities=capabilities, modified_at=wire.now_iso())
    raise GatewayError(404, f"model '{wanted}' not found", code="model_not_found", param="model")


# --- chat and generate -----------------------------------------------------------------------------------


@router.post("/chat", summary="Chat (NDJSON stream unless stream is false)")
async def chat(request: HttpRequest, payload: ModelBody):
    return await _generate(request, payload.to_upstream(), generate=False)


@router.post("/generate", summary="Complete a prompt (NDJSON stream unless stream is false)")
async def generate(request: HttpRequest, payload: ModelBody):
    return await _generate(request, payload.to_upstream(), generate=True)


async def _generate(request: HttpRequest, body: dict[str, Any], *, generate: bool):
    timing = wire.Timing()
    request.freellm_dialect = Dialect.OLLAMA
    model = wire.model_name(body["model"])
    shown_name = body["model"]
    stream = body.get("stream") is not False
    think = body.get("think") is not False
    if not (body.get("prompt") if generate else body.get("messages")):
        # Ollama's "load the model" call (an editor warming up): nothing to load, only the name to check.
        routing_router.resolve(await get_routing_config(), model, "chat")
        unload = body.get("keep_alive") in (0, "0", "0s")
        return JsonResponse(wire.loaded_response(shown_name, generate=generate, unload=unload))
    chat_body = wire.generate_request(body, model) if generate else wire.chat_request(body, model)
    result = await exchange.chat(request, chat_body, dialect=Dialect.OLLAMA, stream=stream)
    if not stream:
        # A cached answer made no call: it took no upstream time.
        timing.answered_in(result.ctx.trail[-1].ms if result.ctx.trail else 0)
        shape = wire.generate_response if generate else wire.chat_response
        return exchange.with_trail(JsonResponse(shape(result.completion, model=shown_name, timing=timing,
                                                      think=think)), result)
    encoder = wire.StreamEncoder(model=shown_name, generate=generate, timing=timing, think=think)
    return exchange.stream_response(request, result, encoder, content_type="application/x-ndjson")


# --- embeddings ------------------------------------------------------------------------------------------


@router.post("/embed", summary="Embed a text or a list of texts")
async def embed(request: HttpRequest, payload: ModelBody):
    timing = wire.Timing()
    body = payload.to_upstream()
    upstream: dict[str, Any] = {"model": wire.model_name(body["model"]), "input": wire.embed_inputs(body, legacy=False)}
    if (dimensions := body.get("dimensions")) is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise GatewayError(400, "dimensions must be a positive integer", param="dimensions", code="invalid_value")
        upstream["dimensions"] = dimensions
    answer, ctx, served = await exchange.embeddings(request, upstream, dialect=Dialect.OLLAMA)
    return exchange.with_trail(JsonResponse(wire.embed_response(answer, model=body["model"], timing=timing)),
                               ctx, served)


@router.post("/embeddings", summary="Embed one prompt (superseded by /api/embed)")
async def embeddings(request: HttpRequest, payload: ModelBody):
    body = payload.to_upstream()
    upstream = {"model": wire.model_name(body["model"]), "input": wire.embed_inputs(body, legacy=True)}
    answer, ctx, served = await exchange.embeddings(request, upstream, dialect=Dialect.OLLAMA)
    return exchange.with_trail(JsonResponse({"embedding": answer["data"][0]["embedding"]}), ctx, served)
