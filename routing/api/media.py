"""/v1 images and audio: the same router (resolve → reserve → call → settle, failover) as chat.

POST /v1/images/generations     JSON in, JSON out (b64_json or url items as the upstream gives them)
POST /v1/audio/transcriptions   multipart upload; response_format json | text | verbose_json | srt | vtt
POST /v1/audio/speech           JSON in, audio bytes out with the upstream's content type
"""

from __future__ import annotations

from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import File, Form, Router
from ninja.files import UploadedFile
from pydantic import Field

from routing.errors import GatewayError
from routing.http import get_client
from routing.tokens import estimate_request_tokens

from . import exchange

router = Router(tags=["images and audio"])

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class ImageRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    n: int | None = Field(None, ge=1, le=10)
    response_format: str | None = Field(None, pattern="^(url|b64_json)$")


class SpeechRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, Any] | None = None
    response_format: str | None = Field(None, pattern=f"^({'|'.join(SPEECH_FORMATS)})$")
    speed: float | None = Field(None, ge=0.25, le=4.0)


@router.post("/images/generations", summary="Create images from a prompt")
async def images_generations(request: HttpRequest, payload: ImageRequest):
    body = payload.to_upstream()

    async def call(adapter, target, timeouts):
        return await adapter.images(get_client(target.proxy), target, body, timeouts)

    ctx, served = await exchange.route(
        request, "image", body["model"], estimate_request_tokens(body, output_reserve=0), call
    )
    await exchange.finish(request, ctx, served, served.result.usage)
    return exchange.with_trail(JsonResponse(served.result.body), ctx, served)


@router.post("/audio/transcriptions", summary="Transcribe an audio file (multipart upload)")
async def audio_transcriptions(
    request: HttpRequest,
    file: File[UploadedFile],
    model: str = Form(..., min_length=1),
    response_format: Literal["json", "text", "verbose_json", "srt", "vtt"] = Form("json"),
):
    # Declared fields are checked and documented; every other field (language, prompt, ...) passes through.
    fields = {name: _single_or_list(request.POST.getlist(name)) for name in request.POST if name != "model"}
    if not file.size:
        raise GatewayError(400, "file: the uploaded file is empty", param="file", code="invalid_value")
    if file.size > settings.FREELLM_MAX_BODY_BYTES:
        raise GatewayError(413, f"file: larger than the limit of {settings.FREELLM_MAX_BODY_BYTES} bytes",
                           param="file", code="request_too_large")
    upload = (file.name or "audio", file.read(), file.content_type or "application/octet-stream")

    async def call(adapter, target, timeouts):
        return await adapter.transcription(get_client(target.proxy), target, upload, fields, timeouts)

    ctx, served = await exchange.route(request, "transcription", model, 0, call)
    result = served.result
    await exchange.finish(request, ctx, served, result.usage)
    if isinstance(result.body, str):
        response = HttpResponse(result.body, content_type="text/plain; charset=utf-8")
    else:
        response = JsonResponse(result.body)
    return exchange.with_trail(response, ctx, served)


@router.post("/audio/speech", summary="Turn text into speech (audio bytes)")
async def audio_speech(request: HttpRequest, payload: SpeechRequest):
    body = payload.to_upstream()

    async def call(adapter, target, timeouts):
        return await adapter.speech(get_client(target.proxy), target, body, timeouts)

    ctx, served = await exchange.route(
        request, "speech", body["model"], estimate_request_tokens(body, output_reserve=0), call
    )
    await exchange.finish(request, ctx, served, None)
    response = HttpResponse(served.result.content, content_type=served.result.content_type)
    return exchange.with_trail(response, ctx, served)


def _single_or_list(values: list[str]) -> str | list[str]:
    # `timestamp_granularities[]` and the like repeat; everything else is a single value.
    return values[0] if len(values) == 1 else values
