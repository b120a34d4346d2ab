"""The OpenAI-compatible adapter: Groq, Cerebras, OpenRouter, Mistral, GitHub Models, NVIDIA NIM, ...

Requests are already OpenAI-shaped, so the work is the provider quirks (kept as data on ``Target``: extra
headers, parameters to drop), streaming, and reading each provider's error dialect into an ``ErrorKind``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from . import transport
from .base import (
    Adapter,
    BinaryResponse,
    ErrorKind,
    Target,
    Timeouts,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
    Usage,
    parse_retry_after,
)

# Phrases providers use when the prompt does not fit the model (OpenAI, Groq, Mistral, vLLM/NIM, OpenRouter).
_CONTEXT_SIGNALS = (
    "context_length_exceeded",
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "reduce the length",
    "exceeds the maximum",
    "maximum number of tokens",
    "request too large",
    "tokens exceed",
)
_BLOCKED_CODES = {"content_filter", "content_policy_violation", "moderation_blocked"}
_NOT_FOUND_CODES = {"model_not_found", "model_not_available", "invalid_model"}
# Groq and OpenAI put the wait in the message: "Please try again in 1m2.5s" / "in 20ms".
_TRY_AGAIN = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:h|ms|m|s))+)", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_MESSAGE_LIMIT = 500


class OpenAIAdapter(Adapter):
    name = "openai"

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        body = _prepared(request, target)
        body.pop("stream", None)
        body.pop("stream_options", None)
        response = await self._send(client, target, "/chat/completions", timeouts, json=body)
        answer = _json_answer(response, target)
        if not isinstance(answer.get("choices"), list):
            raise UpstreamError(
                ErrorKind.SERVER, f"{_where(target)}: answer without choices", status=response.status_code
            )
        return UpstreamResponse(body=answer, usage=_usage(answer.get("usage")), headers=dict(response.headers))

    async def chat_stream(
        self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts
    ) -> UpstreamStream:
        return await self._stream(client, target, "/chat/completions", request, timeouts)

    async def fim_stream(
        self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts
    ) -> UpstreamStream:
        # Mistral's codestral (and servers copying it): POST /fim/completions, chunks shaped like chat's.
        return await self._stream(client, target, "/fim/completions", request, timeouts)

    async def _stream(
        self, client: httpx.AsyncClient, target: Target, path: str, request: dict, timeouts: Timeouts
    ) -> UpstreamStream:
        body = _prepared(request, target)
        body["stream"] = True
        if "stream_options" not in target.drop_params:
            # Ask for the final usage chunk: quota accounting needs real token counts.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        response = await transport.open_stream(
            client,
            _url(target, path),
            provider=target.provider,
            timeouts=timeouts,
            to_error=lambda r: _error_from_response(r, target),
            headers=_headers(target),
            json=body,
        )
        return UpstreamStream(response.headers, _stream_chunks(response, target, timeouts), response.aclose)

    async def embeddings(
        self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts
    ) -> UpstreamResponse:
        response = await self._send(client, target, "/embeddings", timeouts, json=_prepared(request, target))
        answer = _json_answer(response, target)
        return UpstreamResponse(body=answer, usage=_usage(answer.get("usage")), headers=dict(response.headers))

    async def images(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        response = await self._send(client, target, "/images/generations", timeouts, json=_prepared(request, target))
        return UpstreamResponse(body=_json_answer(response, target), headers=dict(response.headers))

    async def transcription(
        self, client: httpx.AsyncClient, target: Target, file: tuple[str, bytes, str], fields: dict, timeouts: Timeouts
    ) -> UpstreamResponse:
        data = transport.drop_params({**fields, "model": target.model}, target.drop_params)
        data = {name: _form_value(value) for name, value in data.items() if value is not None}
        # Encode the multipart body here so the shared send path (timeouts, error mapping) stays one.
        encoded = httpx.Request("POST", _url(target, "/audio/transcriptions"), data=data, files={"file": file})
        content = encoded.read()
        headers = {"Content-Type": encoded.headers["Content-Type"]}
        response = await self._send(client, target, "/audio/transcriptions", timeouts, content=content, extra=headers)
        if "json" in response.headers.get("content-type", ""):
            return UpstreamResponse(body=_json_answer(response, target), headers=dict(response.headers))
        return UpstreamResponse(body=response.text, headers=dict(response.headers))

    async def speech(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> BinaryResponse:
        response = await self._send(client, target, "/audio/speech", timeouts, json=_prepared(request, target))
        content_type = response.headers.get("content-type", "application/octet-stream")
        return BinaryResponse(content=response.content, content_type=content_type, headers=dict(response.headers))

    async def _send(
        self,
        client: httpx.AsyncClient,
        target: Target,
        path: str,
        timeouts: Timeouts,
        *,
        json: Any = None,
        content: bytes | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return await transport.send(
            client,
            "POST",
            _url(target, path),
            provider=target.provider,
            timeouts=timeouts,
            to_error=lambda response: _error_from_response(response, target),
            headers={**_headers(target), **(extra or {})},
            json=json,
            content=content,
        )


def _url(target: Target, path: str) -> str:
    return target.base_url.rstrip("/") + path


def _where(target: Target) -> str:
    return f"{target.provider}/{target.model}"


def _headers(target: Target) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    # Provider quirks (OpenRouter's HTTP-Referer / X-Title, ...) go on every call.
    return {**headers, **target.headers}


def _prepared(request: dict, target: Target) -> dict:
    """The request as this upstream wants it: its own model id, minus the parameters it rejects."""
    body = {**request, "model": target.model}
    # A provider that refuses max_completion_tokens (Mistral, older servers) still gets the client's cap on
    # output, under the older name every OpenAI-compatible server knows.
    if "max_completion_tokens" in target.drop_params and "max_completion_tokens" in body:
        body.setdefault("max_tokens", body["max_completion_tokens"])
    return transport.drop_params(body, target.drop_params)


def _form_value(value: Any) -> Any:
    if isinstance(value, list):
        return [str(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens") or raw.get("input_tokens") or 0
    completion = raw.get("completion_tokens") or raw.get("output_tokens") or 0
    return Usage(prompt_tokens=int(prompt), completion_tokens=int(completion))


def _json_answer(response: httpx.Response, target: Target) -> dict:
    answer = transport.response_json(response)
    if not isinstance(answer, dict):
        raise UpstreamError(ErrorKind.SERVER, f"{_where(target)}: answer is not a JSON object", status=response.status_code)
    # Some gateways (OpenRouter) answer 200 with an error object instead of a result.
    if "error" in answer and not answer.get("choices") and not answer.get("data"):
        raise _error_from_payload(answer, target, status=None, headers=response.headers)
    return answer


async def _stream_chunks(response: httpx.Response, target: Target, timeouts: Timeouts) -> AsyncIterator[dict]:
    finished = False
    try:
        async for event in transport.sse_events(response, timeouts, target.provider):
            if event.data.strip() == "[DONE]":
                finished = True
                break
            try:
                chunk = orjson.loads(event.data)
            except ValueError:
                raise UpstreamError(ErrorKind.SERVER, f"{_where(target)}: unreadable stream event") from None
            if not isinstance(chunk, dict):
                continue
            if event.event == "error" or "error" in chunk:
                raise _error_from_payload(chunk, target, status=None, headers=response.headers)
            # Groq's older streams carry usage in x_groq instead of a usage chunk.
            if not chunk.get("usage") and isinstance(chunk.get("x_groq"), dict) and chunk["x_groq"].get("usage"):
                chunk["usage"] = chunk["x_groq"]["usage"]
            if any(choice.get("finish_reason") for choice in chunk.get("choices") or []):
                finished = True
            yield chunk
        if not finished:
            raise UpstreamError(ErrorKind.CONNECTION, f"{_where(target)}: stream ended before the answer was complete")
    finally:
        await response.aclose()


def _error_from_response(response: httpx.Response, target: Target) -> UpstreamError:
    payload = transport.response_json(response)
    # Gemini's OpenAI-compatible endpoint wraps its error in a one-element list.
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    if not isinstance(payload, dict):
        payload = {"message": response.text}
    return _error_from_payload(payload, target, status=response.status_code, headers=response.headers)


def _error_from_payload(
    payload: dict, target: Target, *, status: int | None, headers: Mapping[str, str]
) -> UpstreamError:
    """Read the provider's error dialect: ``{"error": {...}}``, ``{"error": "..."}``, ``{"message": ...}``,
    ``{"detail": ...}``; OpenRouter puts the upstream status in ``error.code``."""
    error = payload.get("error", payload)
    if isinstance(error, str):
        error = {"message": error}
    message = str(error.get("message") or error.get("detail") or payload.get("detail") or "").strip()
    code = error.get("code")
    if status is None and isinstance(code, int) and 400 <= code < 600:
        status = code
    codes = {str(value).lower() for value in (code, error.get("type"), error.get("status")) if value}
    kind = _kind(status, codes, message)
    retry_after = parse_retry_after(headers) if kind is ErrorKind.RATE_LIMITED else None
    if kind is ErrorKind.RATE_LIMITED and retry_after is None:
        retry_after = _wait_from_message(message)
    text = transport.redact(message or "no error message", target.api_key)
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + "…"
    label = f"HTTP {status}" if status else "stream error"
    return UpstreamError(
        kind, f"{_where(target)}: {label}: {text}", status=status, retry_after=retry_after, headers=headers
    )


def _kind(status: int | None, codes: set[str], message: str) -> ErrorKind:
    text = " ".join([message.lower(), *codes])
    too_long = any(signal in text for signal in _CONTEXT_SIGNALS)
    if codes & _BLOCKED_CODES:
        return ErrorKind.BLOCKED
    if codes & _NOT_FOUND_CODES:
        return ErrorKind.NOT_FOUND
    # Groq answers 413 "rate_limit_exceeded" for one request larger than the whole TPM budget: that never
    # fits on this model, so it is a context-length problem, not a wait.
    if codes & {"rate_limit_exceeded", "resource_exhausted"} and status != 413:
        return ErrorKind.RATE_LIMITED
    if status is None:
        # A mid-stream error without a status: context signals still rule the model out; else the server failed.
        return ErrorKind.CONTEXT_LENGTH if too_long else ErrorKind.SERVER
    if status in (400, 413, 422) and too_long:
        return ErrorKind.CONTEXT_LENGTH
    return transport.kind_for_status(status)


def _wait_from_message(message: str) -> float | None:
    match = _TRY_AGAIN.search(message)
    if not match:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in _DURATION_PART.findall(match.group(1)))
