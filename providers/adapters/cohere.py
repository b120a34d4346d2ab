"""Cohere API v2, native: ``POST {base_url}/chat`` and ``POST {base_url}/embed``.

``Target.base_url`` is the versioned root, ``https://api.cohere.com/v2``; the key goes in
``Authorization: Bearer``.

Translation, both ways:
- messages keep OpenAI's roles (system, user, assistant, tool); assistant ``tool_calls`` and tool results
  (``tool_call_id`` + content) have the same shape in v2; an assistant's text beside tool calls goes as its
  ``tool_plan``. ``developer`` becomes ``system``.
- sampling: ``top_p`` → ``p``, ``stop`` → ``stop_sequences``; ``response_format`` json → ``json_object``
  (with the schema for ``json_schema``); ``tool_choice`` ``required``/``none`` → ``REQUIRED``/``NONE`` (a
  named function: ``REQUIRED`` with only that tool offered).
- answers: ``message.content[].text`` → content, ``message.tool_calls`` → tool_calls, ``finish_reason``
  COMPLETE/STOP_SEQUENCE → stop, MAX_TOKENS → length, TOOL_CALL → tool_calls; usage from
  ``usage.billed_units`` (what the trial counts), else ``usage.tokens``. ``tool_plan`` (the model's note
  before calling tools) has no OpenAI field and is left out.
- stream events ``message-start``, ``content-delta``, ``tool-call-start``/``-delta``/``-end``,
  ``message-end`` (finish reason and usage) → OpenAI chunks; a stream that stops before ``message-end``
  is a CONNECTION error.
- embeddings: ``input`` → ``texts`` with ``input_type`` (``search_document`` unless the client sent one),
  ``embedding_types: ["float"]``, ``dimensions`` → ``output_dimension``.
- errors ``{"id", "message"}`` by status: 429 → RATE_LIMITED (``Retry-After`` when sent), 401/402/403 →
  AUTH, 404 → NOT_FOUND, "too many tokens" → CONTEXT_LENGTH, other 4xx → BAD_REQUEST, 5xx → SERVER.
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
    redact,
    response_json,
    rough_tokens,
    send,
    sse_events,
    stop_list,
    tool_call_id,
    usage_dict,
)

PROVIDER = "Cohere"
FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_CONTEXT_LENGTH = re.compile(r"too many tokens|context length|maximum.*tokens|prompt is too long", re.I)


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(ErrorKind.BAD_REQUEST, message, status=400)


# --- request ---------------------------------------------------------------------------------------


def _user_content(content: Any) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise _bad_request(f"content part type {kind!r} is not supported by Cohere")
    return parts


def _text_content(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def translate_messages(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text_content(message.get("content"))})
        elif role == "user":
            out.append({"role": "user", "content": _user_content(message.get("content"))})
        elif role == "assistant":
            item: dict[str, Any] = {"role": "assistant"}
            if text := _text_content(message.get("content")):
                # Beside tool calls, v2 calls the assistant's text its tool plan.
                item["tool_plan" if message.get("tool_calls") else "content"] = text
            if message.get("tool_calls"):
                item["tool_calls"] = [
                    {
                        "id": call.get("id") or tool_call_id(),
                        "type": "function",
                        "function": {
                            "name": (call.get("function") or {}).get("name", ""),
                            "arguments": (call.get("function") or {}).get("arguments") or "{}",
                        },
                    }
                    for call in message["tool_calls"]
                ]
            if len(item) == 1:
                item["content"] = ""
            out.append(item)
        elif role == "tool":
            if not message.get("tool_call_id"):
                raise _bad_request("a tool message needs the tool_call_id it answers")
            out.append({
                "role": "tool",
                "tool_call_id": message["tool_call_id"],
                "content": _text_content(message.get("content")),
            })
        else:
            raise _bad_request(f"message role {role!r} is not supported")
    return out


def build_chat_request(request: dict, model: str) -> dict:
    body: dict[str, Any] = {"model": model, "messages": translate_messages(request.get("messages") or [])}
    simple = {
        "temperature": "temperature",
        "top_p": "p",
        "seed": "seed",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
    }
    for openai_name, cohere_name in simple.items():
        if request.get(openai_name) is not None:
            body[cohere_name] = request[openai_name]
    if max_tokens := request.get("max_completion_tokens") or request.get("max_tokens"):
        body["max_tokens"] = max_tokens
    if stops := stop_list(request.get("stop")):
        body["stop_sequences"] = stops
    response_format = request.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        body["response_format"] = {"type": "json_object"}
        if schema := (response_format.get("json_schema") or {}).get("schema"):
            body["response_format"]["json_schema"] = schema
    tools = request.get("tools") or []
    tool_choice = request.get("tool_choice")
    if isinstance(tool_choice, dict):
        # v2 cannot name a function: offer only that one and require a call.
        wanted = (tool_choice.get("function") or {}).get("name")
        tools = [tool for tool in tools if (tool.get("function") or {}).get("name") == wanted]
        tool_choice = "required"
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": (tool.get("function") or {}).get("name", ""),
                    "description": (tool.get("function") or {}).get("description", ""),
                    "parameters": (tool.get("function") or {}).get("parameters") or {"type": "object", "properties": {}},
                },
            }
            for tool in tools
        ]
        if tool_choice in ("required", "none"):
            body["tool_choice"] = tool_choice.upper()
    return body


# --- response --------------------------------------------------------------------------------------


def _usage(raw: Any) -> dict | None:
    if not isinstance(raw, dict):
        return None
    counts = raw.get("billed_units") or raw.get("tokens")
    if not isinstance(counts, dict):
        return None
    return usage_dict(int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0))


def _to_usage(usage: dict | None) -> Usage | None:
    return Usage(usage["prompt_tokens"], usage["completion_tokens"]) if usage else None


def _tool_calls(raw: Any) -> list[dict]:
    calls = []
    for call in raw or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls.append({
            "id": call.get("id") or tool_call_id(),
            "type": "function",
            "function": {
                "name": function.get("name", ""),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
            },
        })
    return calls


def _finish_reason(reason: str | None, produced: bool) -> str:
    if reason == "ERROR":
        raise UpstreamError(ErrorKind.SERVER, "Cohere stopped the answer with an error")
    if reason == "TIMEOUT" and not produced:
        raise UpstreamError(ErrorKind.TIMEOUT, "Cohere timed out generating the answer")
    return FINISH_REASONS.get(reason or "", "length" if reason == "TIMEOUT" else "stop")


def chat_completion_from_cohere(data: dict, model: str) -> dict:
    message = data.get("message") or {}
    text = "".join(part.get("text", "") for part in message.get("content") or [] if part.get("type") == "text")
    calls = _tool_calls(message.get("tool_calls"))
    out: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return chat_completion(
        model=model,
        message=out,
        finish_reason=_finish_reason(data.get("finish_reason"), bool(text or calls)),
        usage=_usage(data.get("usage")),
        response_id=f"chatcmpl-{data['id']}" if data.get("id") else None,
    )


class _StreamTranslator:
    """Cohere v2 stream events → OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self.chunks = ChunkFactory(model)
        self.finished = False
        self.produced = False
        self.usage: dict | None = None
        # Cohere's tool-call index → OpenAI's (a dense 0, 1, ... over tool calls only)
        self.tool_indexes: dict[int, int] = {}

    def feed(self, event: dict) -> list[dict]:
        kind = event.get("type")
        message = (event.get("delta") or {}).get("message") or {}
        if kind == "message-start":
            return [self.chunks.delta({"role": "assistant", "content": ""})]
        if kind == "content-delta":
            text = (message.get("content") or {}).get("text") or ""
            self.produced = self.produced or bool(text)
            return [self.chunks.delta({"content": text})] if text else []
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            index = self.tool_indexes.setdefault(event.get("index", len(self.tool_indexes)), len(self.tool_indexes))
            function = call.get("function") or {}
            self.produced = True
            delta = {
                "index": index,
                "id": call.get("id") or tool_call_id(),
                "type": "function",
                "function": {"name": function.get("name", ""), "arguments": function.get("arguments") or ""},
            }
            return [self.chunks.delta({"tool_calls": [delta]})]
        if kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments") or ""
            index = self.tool_indexes.get(event.get("index", 0), 0)
            return [self.chunks.delta({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})] if arguments else []
        if kind == "message-end":
            delta = event.get("delta") or {}
            self.usage = _usage(delta.get("usage"))
            self.finished = True
            return [self.chunks.delta({}, _finish_reason(delta.get("finish_reason"), self.produced))]
        # content-start/-end, tool-plan-delta, tool-call-end, citation-*: nothing for an OpenAI client.
        return []

    def close(self) -> list[dict]:
        if not self.finished:
            raise UpstreamError(ErrorKind.CONNECTION, "Cohere's stream ended before message-end")
        return [self.chunks.usage(self.usage)] if self.usage else []


# --- errors ----------------------------------------------------------------------------------------


def error_from_response(response: httpx.Response, api_key: str | None = None) -> UpstreamError:
    body = response_json(response)
    message = ""
    if isinstance(body, dict):
        error = body.get("error")
        message = str(body.get("message") or (error.get("message") if isinstance(error, dict) else error) or "")
    message = redact(message or response.text[:300] or response.reason_phrase, api_key)
    status = response.status_code
    kind = kind_for_status(status)
    if status in (400, 422) and _CONTEXT_LENGTH.search(message):
        kind = ErrorKind.CONTEXT_LENGTH
    retry_after = parse_retry_after(response.headers) if kind is ErrorKind.RATE_LIMITED else None
    return UpstreamError(kind, f"Cohere {status}: {message}", status=status, retry_after=retry_after, headers=response.headers)


def _stream_error(event: dict) -> UpstreamError:
    message = str(event.get("message") or (event.get("delta") or {}).get("error") or "error in stream")
    kind = ErrorKind.CONTEXT_LENGTH if _CONTEXT_LENGTH.search(message) else ErrorKind.SERVER
    return UpstreamError(kind, f"Cohere stream error: {message}")


# --- adapter ---------------------------------------------------------------------------------------


class CohereAdapter(Adapter):
    name = "cohere"

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {**target.headers, "content-type": "application/json", "accept": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return headers

    def _url(self, target: Target, path: str) -> str:
        return f"{target.base_url.rstrip('/')}/{path}"

    async def _post(self, client: httpx.AsyncClient, target: Target, path: str, body: dict, timeouts: Timeouts) -> httpx.Response:
        return await send(
            client,
            "POST",
            self._url(target, path),
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=self._headers(target),
            json=body,
        )

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        body = build_chat_request(drop_params(request, target.drop_params), target.model)
        response = await self._post(client, target, "chat", body, timeouts)
        data = response_json(response)
        if not isinstance(data, dict):
            raise UpstreamError(ErrorKind.SERVER, "Cohere's answer is not a JSON object", status=response.status_code)
        answer = chat_completion_from_cohere(data, target.model)
        return UpstreamResponse(answer, _to_usage(answer.get("usage")), response.headers)

    async def chat_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        body = {**build_chat_request(drop_params(request, target.drop_params), target.model), "stream": True}
        headers = {**self._headers(target), "accept": "text/event-stream"}
        response = await open_stream(
            client,
            self._url(target, "chat"),
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=headers,
            json=body,
        )
        translator = _StreamTranslator(target.model)

        async def chunks() -> AsyncIterator[dict]:
            try:
                async for sse in sse_events(response, timeouts, PROVIDER):
                    if sse.data.strip() == "[DONE]":
                        break
                    try:
                        event = orjson.loads(sse.data)
                    except ValueError:
                        raise UpstreamError(ErrorKind.SERVER, "Cohere sent a stream event that is not JSON") from None
                    if sse.event == "error" or event.get("type") == "error":
                        raise _stream_error(event)
                    for chunk in translator.feed(event):
                        yield chunk
                for chunk in translator.close():
                    yield chunk
            finally:
                await response.aclose()

        return UpstreamStream(response.headers, chunks(), response.aclose)

    async def embeddings(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        texts = embedding_inputs(request)
        body: dict[str, Any] = {
            "model": target.model,
            "texts": texts,
            "input_type": request.get("input_type") or "search_document",
            "embedding_types": ["float"],
        }
        if request.get("dimensions"):
            body["output_dimension"] = request["dimensions"]
        response = await self._post(client, target, "embed", body, timeouts)
        data = response_json(response) or {}
        embeddings = data.get("embeddings")
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise UpstreamError(ErrorKind.SERVER, "Cohere returned a different number of embeddings than inputs")
        billed = ((data.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
        prompt_tokens = int(billed) if billed is not None else rough_tokens(texts)
        answer = embedding_list(
            vectors,
            model=target.model,
            encoding_format=request.get("encoding_format"),
            prompt_tokens=prompt_tokens,
        )
        return UpstreamResponse(answer, Usage(prompt_tokens, 0), response.headers)
