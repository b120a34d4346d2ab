"""Google Gemini API, native (``generativelanguage.googleapis.com/v1beta``).

``Target.base_url`` is the API root including the version, e.g.
``https://generativelanguage.googleapis.com/v1beta``; the adapter calls
``{base_url}/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``, ``:embedContent`` and
``:batchEmbedContents`` with the key in ``x-goog-api-key`` (never in the URL, where it would reach logs).

Translation, both ways:
- roles: ``assistant`` → ``model``; ``system``/``developer`` messages → one ``systemInstruction``;
  ``tool`` results → ``functionResponse`` parts (the function name is looked up from the assistant's
  earlier tool call with that id); consecutive turns of one role are merged, as Gemini expects.
- content parts: text, images and files as ``data:`` URLs → ``inlineData``, http(s) image URLs →
  ``fileData``, ``input_audio`` → ``inlineData``.
- ``tools`` → ``functionDeclarations`` (the JSON schema goes to ``parametersJsonSchema`` unchanged);
  ``tool_choice`` → ``toolConfig``; answers' ``functionCall`` parts → ``tool_calls``. Gemini 3 models
  sign their function calls: the signature travels in the tool call's ``extra_content.google
  .thought_signature`` (the convention of Google's own OpenAI layer) and comes back to Gemini on the next
  turn; a history without one (written by another model, e.g. after a failover) gets the documented
  placeholder that skips the check.
- sampling → ``generationConfig``; ``response_format`` json → ``responseMimeType: application/json``
  (plus ``responseJsonSchema`` for ``json_schema``).
- safety: a prompt blocked by ``promptFeedback.blockReason``, or an answer stopped for safety before
  anything was produced, raises ``UpstreamError(BLOCKED)``; a stream stopped for safety after some text
  ends with ``finish_reason: content_filter``.
- errors: ``{"error": {"code", "status", "message", "details"}}``; 429 ``RESOURCE_EXHAUSTED`` gives
  ``retry_after`` from ``RetryInfo.retryDelay`` (until Pacific midnight when a per-day quota ran out),
  ``API_KEY_INVALID``/401/403 → AUTH, 404 → NOT_FOUND, token-limit messages → CONTEXT_LENGTH,
  5xx → SERVER.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from .base import (
    Adapter,
    ErrorKind,
    Target,
    Timeouts,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
    Usage,
    parse_retry_after,
)
from .transport import (
    ChunkFactory,
    chat_completion,
    drop_params,
    embedding_inputs,
    embedding_list,
    kind_for_status,
    open_stream,
    parse_data_url,
    redact,
    response_json,
    rough_tokens,
    seconds_until_midnight,
    send,
    sse_events,
    stop_list,
    text_of,
    tool_call_id,
    usage_dict,
)

PROVIDER = "Gemini"
# Google's documented value for a function call whose real signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
DAILY_RESET_TZ = "America/Los_Angeles"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
}
SAFETY_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
IMAGE_MIME_BY_SUFFIX = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".heic": "image/heic"}
_CONTEXT_LENGTH = re.compile(r"token count|exceeds the maximum number of tokens|too many tokens|context", re.I)


# --- request ---------------------------------------------------------------------------------------


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(ErrorKind.BAD_REQUEST, message, status=400)


def _image_part(url: str) -> dict:
    if inline := parse_data_url(url):
        mime, data = inline
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("http://", "https://")):
        path = url.split("?", 1)[0].lower()
        mime = next((m for suffix, m in IMAGE_MIME_BY_SUFFIX.items() if path.endswith(suffix)), "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _bad_request("image_url must be a data: URL or an http(s) URL")


def _content_parts(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict] = []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            parts.append({"text": item.get("text", "")})
        elif kind == "image_url":
            image = item.get("image_url")
            parts.append(_image_part(image.get("url", "") if isinstance(image, dict) else str(image or "")))
        elif kind == "input_audio":
            audio = item.get("input_audio") or {}
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            inline = parse_data_url((item.get("file") or {}).get("file_data", ""))
            if inline is None:
                raise _bad_request("file parts need `file_data` as a base64 data: URL for Gemini")
            parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        else:
            raise _bad_request(f"content part type {kind!r} is not supported by Gemini")
    return parts


def _call_args(arguments: Any) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        raise _bad_request("tool_calls[].function.arguments must be a JSON object") from None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _function_call_parts(tool_calls: list[dict]) -> list[dict]:
    parts = []
    for index, call in enumerate(tool_calls):
        function = call.get("function") or {}
        part: dict[str, Any] = {"functionCall": {"name": function.get("name", ""), "args": _call_args(function.get("arguments"))}}
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        # Gemini 3 checks the signature of the first call of a turn; other models ignore it.
        if signature or index == 0:
            part["thoughtSignature"] = signature or SKIP_SIGNATURE
        parts.append(part)
    return parts


def _function_response(content: Any) -> dict:
    text = text_of(content)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"result": text}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def translate_messages(messages: list[dict]) -> tuple[dict | None, list[dict]]:
    """OpenAI messages → (systemInstruction, contents)."""
    system_parts: list[dict] = []
    contents: list[dict] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            if text := text_of(message.get("content")):
                system_parts.append({"text": text})
        elif role == "user":
            add("user", _content_parts(message.get("content")))
        elif role == "assistant":
            tool_calls = message.get("tool_calls") or []
            for call in tool_calls:
                call_names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
            add("model", _content_parts(message.get("content")) + _function_call_parts(tool_calls))
        elif role in ("tool", "function"):
            name = message.get("name") or call_names.get(message.get("tool_call_id", ""), "")
            if not name:
                raise _bad_request("a tool message must answer a tool call of an earlier assistant message")
            add("user", [{"functionResponse": {"name": name, "response": _function_response(message.get("content"))}}])
        else:
            raise _bad_request(f"message role {role!r} is not supported")
    if not contents:
        raise _bad_request("messages must contain at least one user message")
    return ({"parts": system_parts} if system_parts else None), contents


def _tools(tools: list[dict]) -> list[dict]:
    declarations = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise _bad_request(f"tool type {tool.get('type')!r} is not supported by Gemini")
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": function.get("name", ""), "description": function.get("description", "")}
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(tool_choice: Any) -> dict | None:
    if tool_choice is None:
        return None
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [name]} if name else {"mode": "ANY"}
    else:
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(tool_choice, "AUTO")}
    return {"functionCallingConfig": config}


def _generation_config(request: dict) -> dict:
    config: dict[str, Any] = {}
    simple = {
        "temperature": "temperature",
        "top_p": "topP",
        "n": "candidateCount",
        "seed": "seed",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
    }
    for openai_name, gemini_name in simple.items():
        if request.get(openai_name) is not None:
            config[gemini_name] = request[openai_name]
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    if stops := stop_list(request.get("stop")):
        config["stopSequences"] = stops
    response_format = request.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    return config


def build_generate_request(request: dict) -> dict:
    """An OpenAI chat request → a Gemini ``GenerateContentRequest``."""
    system, contents = translate_messages(request.get("messages") or [])
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = system
    if request.get("tools"):
        body["tools"] = _tools(request["tools"])
        if tool_config := _tool_config(request.get("tool_choice")):
            body["toolConfig"] = tool_config
    if config := _generation_config(request):
        body["generationConfig"] = config
    return body


# --- response --------------------------------------------------------------------------------------


def _blocked(reason: str, where: str) -> UpstreamError:
    return UpstreamError(
        ErrorKind.BLOCKED,
        f"Gemini's safety filter blocked the {where} (reason: {reason}); rephrase the request",
        status=400,
    )


def _check_prompt_feedback(data: dict) -> None:
    if reason := (data.get("promptFeedback") or {}).get("blockReason"):
        raise _blocked(reason, "prompt")


def _usage(data: dict) -> dict | None:
    meta = data.get("usageMetadata")
    if not meta:
        return None
    thoughts = meta.get("thoughtsTokenCount", 0) or 0
    completion = (meta.get("candidatesTokenCount", 0) or 0) + thoughts
    return usage_dict(meta.get("promptTokenCount", 0) or 0, completion, reasoning_tokens=thoughts)


def _to_usage(usage: dict | None) -> Usage | None:
    return Usage(usage["prompt_tokens"], usage["completion_tokens"]) if usage else None


def _tool_call(part: dict) -> dict:
    call = part["functionCall"]
    tool_call: dict[str, Any] = {
        "id": call.get("id") or tool_call_id(),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": json.dumps(call.get("args") or {})},
    }
    if signature := part.get("thoughtSignature"):
        tool_call["extra_content"] = {"google": {"thought_signature": signature}}
    return tool_call


def _split_parts(parts: list[dict]) -> tuple[str, list[dict]]:
    """Answer text (thought summaries left out) and tool calls of a candidate's parts."""
    text = "".join(part.get("text", "") for part in parts if "text" in part and not part.get("thought"))
    calls = [_tool_call(part) for part in parts if "functionCall" in part]
    return text, calls


def _finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason == "MALFORMED_FUNCTION_CALL":
        raise UpstreamError(ErrorKind.SERVER, "Gemini produced a malformed function call")
    if has_calls and reason == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def chat_completion_from_gemini(data: dict, model: str) -> dict:
    _check_prompt_feedback(data)
    candidates = data.get("candidates") or []
    if not candidates:
        raise UpstreamError(ErrorKind.SERVER, "Gemini answered without a candidate")
    choices = []
    for index, candidate in enumerate(candidates):
        text, calls = _split_parts((candidate.get("content") or {}).get("parts") or [])
        reason = candidate.get("finishReason")
        if reason in SAFETY_REASONS and not text and not calls:
            raise _blocked(reason, "answer")
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {"index": index, "message": message, "finish_reason": _finish_reason(reason, bool(calls)), "logprobs": None}
        )
    body = chat_completion(
        model=model,
        message=choices[0]["message"],
        finish_reason=choices[0]["finish_reason"],
        usage=_usage(data),
        response_id=f"chatcmpl-{data['responseId']}" if data.get("responseId") else None,
    )
    body["choices"] = choices
    return body


class _StreamTranslator:
    """Gemini stream events (each a partial ``GenerateContentResponse``) → OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self.chunks = ChunkFactory(model)
        self.started = False
        self.produced = False
        self.finished = False
        self.tool_index = 0
        self.usage: dict | None = None

    def feed(self, data: dict) -> list[dict]:
        _check_prompt_feedback(data)
        out: list[dict] = []
        if not self.started:
            out.append(self.chunks.delta({"role": "assistant", "content": ""}))
            self.started = True
        self.usage = _usage(data) or self.usage
        candidate = (data.get("candidates") or [{}])[0]
        text, calls = _split_parts((candidate.get("content") or {}).get("parts") or [])
        if text:
            out.append(self.chunks.delta({"content": text}))
            self.produced = True
        if calls:
            deltas = [{"index": self.tool_index + i, **call} for i, call in enumerate(calls)]
            self.tool_index += len(calls)
            out.append(self.chunks.delta({"tool_calls": deltas}))
            self.produced = True
        if reason := candidate.get("finishReason"):
            if reason in SAFETY_REASONS and not self.produced:
                raise _blocked(reason, "answer")
            out.append(self.chunks.delta({}, _finish_reason(reason, self.tool_index > 0)))
            self.finished = True
        return out

    def close(self) -> list[dict]:
        if not self.finished:
            raise UpstreamError(ErrorKind.CONNECTION, "Gemini's stream ended before the answer was finished")
        return [self.chunks.usage(self.usage)] if self.usage else []


# --- errors ----------------------------------------------------------------------------------------


def _retry_delay(details: list[dict]) -> float | None:
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", "")).rstrip("s")
            try:
                return max(0.0, float(delay))
            except ValueError:
                return None
    return None


def _per_day_quota(details: list[dict]) -> bool:
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if "perday" in str(violation.get("quotaId", "")).lower():
                    return True
    return False


def _error_reasons(details: list[dict]) -> set[str]:
    return {str(d.get("reason")) for d in details if d.get("@type", "").endswith("google.rpc.ErrorInfo")}


def error_from_response(response: httpx.Response, api_key: str | None = None) -> UpstreamError:
    body = response_json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        error = body[0].get("error")  # the streaming endpoint without alt=sse wraps errors in a list
    error = error if isinstance(error, dict) else {}
    status = response.status_code
    message = redact(str(error.get("message") or response.reason_phrase or "error"), api_key)
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    kind = kind_for_status(status)
    retry_after = None
    if status == 429 or error.get("status") == "RESOURCE_EXHAUSTED":
        kind = ErrorKind.RATE_LIMITED
        retry_after = _retry_delay(details) or parse_retry_after(response.headers)
        if _per_day_quota(details):
            retry_after = max(retry_after or 0.0, seconds_until_midnight(DAILY_RESET_TZ))
    elif "API_KEY_INVALID" in _error_reasons(details) or error.get("status") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        kind = ErrorKind.AUTH
    elif status == 400 and error.get("status") == "FAILED_PRECONDITION":
        # e.g. "User location is not supported": this key cannot be used from here.
        kind = ErrorKind.AUTH
    elif status == 400 and _CONTEXT_LENGTH.search(message):
        kind = ErrorKind.CONTEXT_LENGTH
    return UpstreamError(
        kind, f"Gemini {status}: {message}", status=status, retry_after=retry_after, headers=response.headers
    )


# --- adapter ---------------------------------------------------------------------------------------


class GeminiAdapter(Adapter):
    name = "gemini"

    def _url(self, target: Target, method: str) -> str:
        model = target.model.removeprefix("models/")
        return f"{target.base_url.rstrip('/')}/models/{model}:{method}"

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {**target.headers, "content-type": "application/json"}
        if target.api_key:
            headers["x-goog-api-key"] = target.api_key
        return headers

    async def _post(self, client: httpx.AsyncClient, target: Target, method: str, body: dict, timeouts: Timeouts) -> httpx.Response:
        return await send(
            client,
            "POST",
            self._url(target, method),
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=self._headers(target),
            json=body,
        )

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        body = build_generate_request(drop_params(request, target.drop_params))
        response = await self._post(client, target, "generateContent", body, timeouts)
        answer = chat_completion_from_gemini(response_json(response) or {}, target.model)
        return UpstreamResponse(answer, _to_usage(answer.get("usage")), response.headers)

    async def chat_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        body = build_generate_request(drop_params(request, target.drop_params))
        response = await open_stream(
            client,
            self._url(target, "streamGenerateContent") + "?alt=sse",
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=self._headers(target),
            json=body,
        )
        translator = _StreamTranslator(target.model)

        async def chunks() -> AsyncIterator[dict]:
            try:
                async for event in sse_events(response, timeouts, PROVIDER):
                    try:
                        data = orjson.loads(event.data)
                    except ValueError:
                        raise UpstreamError(ErrorKind.SERVER, "Gemini sent a stream event that is not JSON") from None
                    if isinstance(data, dict) and "error" in data:
                        raise _stream_error(data["error"])
                    for chunk in translator.feed(data):
                        yield chunk
                for chunk in translator.close():
                    yield chunk
            finally:
                await response.aclose()

        return UpstreamStream(response.headers, chunks(), response.aclose)

    async def embeddings(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        texts = embedding_inputs(request)
        model = target.model.removeprefix("models/")
        extra: dict[str, Any] = {}
        if request.get("dimensions"):
            extra["outputDimensionality"] = request["dimensions"]
        if len(texts) == 1:
            body = {"model": f"models/{model}", "content": {"parts": [{"text": texts[0]}]}, **extra}
            response = await self._post(client, target, "embedContent", body, timeouts)
            data = response_json(response) or {}
            response_vectors = [(data.get("embedding") or {}).get("values") or []]
        else:
            requests = [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in texts]
            response = await self._post(client, target, "batchEmbedContents", {"requests": requests}, timeouts)
            data = response_json(response) or {}
            response_vectors = [e.get("values") or [] for e in data.get("embeddings") or []]
        if len(response_vectors) != len(texts) or not all(response_vectors):
            raise UpstreamError(ErrorKind.SERVER, "Gemini returned fewer embeddings than inputs")
        # The embedding endpoints report no usage; a rough count keeps token quotas honest.
        prompt_tokens = rough_tokens(texts)
        body = embedding_list(
            response_vectors,
            model=target.model,
            encoding_format=request.get("encoding_format"),
            prompt_tokens=prompt_tokens,
        )
        return UpstreamResponse(body, Usage(prompt_tokens, 0), response.headers)


def _stream_error(error: Any) -> UpstreamError:
    error = error if isinstance(error, dict) else {}
    code = int(error.get("code") or 500)
    kind = ErrorKind.RATE_LIMITED if code == 429 else kind_for_status(code)
    return UpstreamError(kind, f"Gemini {code}: {error.get('message') or 'error in stream'}", status=code)
