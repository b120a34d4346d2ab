"""Cloudflare Workers AI, native: ``POST {base_url}/accounts/{account_id}/ai/run/{model}``.

Conventions:
- ``Target.base_url`` is the Cloudflare API root, ``https://api.cloudflare.com/client/v4``; the adapter adds
  ``/accounts/{account_id}/ai/run/{model}`` (model ids such as ``@cf/meta/llama-3.3-70b-instruct-fp8-fast``
  go into the path as they are).
- ``Target.api_key`` is ``account_id:token`` (one secret, so a key row carries everything a call needs);
  the token goes in ``Authorization: Bearer``. A key without the colon is an AUTH error.
- Every answer is wrapped: ``{"result": ..., "success": true, "errors": [], "messages": []}``; failures carry
  ``errors: [{"code", "message"}]``.

What the model id is for decides the body:
- chat: ``{messages, stream?, max_tokens, temperature, top_p, seed, penalties, tools?, response_format?}``
  → ``result.response`` (+ ``tool_calls`` in either Workers AI's ``{name, arguments: {...}}`` shape or
  OpenAI's, + ``usage``); models that answer in OpenAI's shape (``result.choices``) are passed through.
  Message content is sent as a string when it is only text. ``max_tokens`` defaults to 1024 because Workers
  AI's own default (256) cuts most answers short. ``stop`` has no native equivalent and is not sent;
  ``tool_choice: none`` sends no tools, a named function sends only that tool.
  OpenAI's gpt-oss models take the Responses API format on ``/ai/run``; for them chat goes to Workers AI's
  OpenAI-compatible endpoint ``/accounts/{account_id}/ai/v1/chat/completions`` through the OpenAI adapter.
- streaming: SSE ``data: {"response": "..."}`` ... (a last event with ``usage``) ... ``data: [DONE]``; tool
  calls arrive whole or as OpenAI-style deltas. A stream that ends without ``[DONE]`` is a CONNECTION error.
- embeddings: ``{text: [...]}`` → ``result.data`` (``result.shape`` is ``[n, dims]``).
- images: ``{prompt, steps}`` → ``result.image`` (base64), or raw image bytes for models that answer so;
  returned as OpenAI ``b64_json`` (a ``data:`` URL in ``url`` when the client asked for urls).
- transcription: Whisper models take the raw audio bytes as the body; ``whisper-large-v3-turbo`` takes
  ``{audio: base64}`` JSON. ``result.text`` (+ ``words``/``segments``/``vtt``) → OpenAI json, text,
  verbose_json or vtt.

Errors by HTTP status and Workers AI code: 401/403 (code 10000) → AUTH; 429 → RATE_LIMITED (code 3036, the
daily free allocation of neurons, waits until 00:00 UTC); 5007 "No such model" / 3042 / 404 → NOT_FOUND;
3006 (413) and "context window" messages → CONTEXT_LENGTH; 408 → TIMEOUT; 5xx → SERVER.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
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
from .openai import OpenAIAdapter
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
    seconds_until_midnight,
    send,
    sse_events,
    text_of,
    tool_call_id,
    usage_dict,
)

PROVIDER = "Cloudflare Workers AI"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_IMAGE_STEPS = 4
DAILY_ALLOCATION_CODE = 3036
NOT_FOUND_CODES = frozenset({5007, 3042})
CONTEXT_CODES = frozenset({3006, 5021})
_CONTEXT_LENGTH = re.compile(r"context window|too (?:many|long)|exceeded .*tokens|request is too large", re.I)
# Models whose /ai/run input is the Responses API, not chat messages.
OPENAI_LAYER_PREFIXES = ("@cf/openai/gpt-oss",)
SAMPLING = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty", "repetition_penalty")


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(ErrorKind.BAD_REQUEST, message, status=400)


def split_key(api_key: str | None) -> tuple[str, str]:
    account_id, _, token = (api_key or "").partition(":")
    if not account_id or not token:
        raise UpstreamError(
            ErrorKind.AUTH, "a Cloudflare Workers AI key must be `account_id:api_token`", status=401
        )
    return account_id, token


# --- chat request ----------------------------------------------------------------------------------


def _message_content(content: Any) -> Any:
    """Plain text as a string (what every Workers AI chat model accepts); image parts keep the list."""
    if isinstance(content, list) and any(part.get("type") != "text" for part in content):
        return content
    return text_of(content)


def translate_messages(messages: list[dict]) -> list[dict]:
    out = []
    call_names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise _bad_request(f"message role {role!r} is not supported")
        item: dict[str, Any] = {"role": role, "content": _message_content(message.get("content"))}
        if role == "assistant" and message.get("tool_calls"):
            item["tool_calls"] = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                call_names[call.get("id", "")] = function.get("name", "")
                item["tool_calls"].append({
                    "id": call.get("id") or tool_call_id(),
                    "type": "function",
                    "function": {"name": function.get("name", ""), "arguments": function.get("arguments") or "{}"},
                })
        if role == "tool":
            item["tool_call_id"] = message.get("tool_call_id", "")
            # Llama's tool prompt format names the function a result belongs to.
            if name := message.get("name") or call_names.get(message.get("tool_call_id", "")):
                item["name"] = name
        out.append(item)
    return out


def build_chat_request(request: dict, *, stream: bool) -> dict:
    body: dict[str, Any] = {"messages": translate_messages(request.get("messages") or [])}
    for name in SAMPLING:
        if request.get(name) is not None:
            body[name] = request[name]
    body["max_tokens"] = request.get("max_completion_tokens") or request.get("max_tokens") or DEFAULT_MAX_TOKENS
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif response_format.get("type") == "json_schema":
        # Workers AI takes the schema itself as json_schema, not OpenAI's {name, schema, strict} around it.
        wrapped = response_format.get("json_schema") or {}
        body["response_format"] = {"type": "json_schema", "json_schema": wrapped.get("schema", wrapped)}
    tools = request.get("tools") or []
    tool_choice = request.get("tool_choice")
    if tool_choice == "none":
        tools = []
    elif isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        tools = [tool for tool in tools if (tool.get("function") or {}).get("name") == wanted]
    if tools:
        body["tools"] = tools
    if stream:
        body["stream"] = True
    return body


# --- chat response ---------------------------------------------------------------------------------


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {})


def _tool_call(raw: dict) -> dict:
    """Workers AI's ``{name, arguments: {...}}`` or OpenAI's ``{id, type, function}`` → OpenAI's."""
    function = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    return {
        "id": raw.get("id") or tool_call_id(),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": _arguments_text(function.get("arguments"))},
    }


def _usage(raw: Any) -> dict | None:
    if not isinstance(raw, dict):
        return None
    return usage_dict(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def _to_usage(usage: dict | None) -> Usage | None:
    return Usage(usage["prompt_tokens"], usage["completion_tokens"]) if usage else None


def chat_completion_from_result(result: Any, model: str) -> dict:
    if not isinstance(result, dict):
        raise UpstreamError(ErrorKind.SERVER, "Workers AI answered without a result")
    if isinstance(result.get("choices"), list):
        return {**result, "model": model}
    response = result.get("response")
    # Some models parse JSON-mode answers and hand back an object instead of text.
    text = response if isinstance(response, str) or response is None else json.dumps(response)
    calls = [_tool_call(call) for call in result.get("tool_calls") or []]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return chat_completion(
        model=model,
        message=message,
        finish_reason="tool_calls" if calls else "stop",
        usage=_usage(result.get("usage")),
    )


class _StreamTranslator:
    def __init__(self, model: str) -> None:
        self.chunks = ChunkFactory(model)
        self.started = False
        self.usage: dict | None = None
        self.tool_calls = 0

    def feed(self, event: dict) -> list[dict]:
        out: list[dict] = []
        if not self.started:
            out.append(self.chunks.delta({"role": "assistant", "content": ""}))
            self.started = True
        self.usage = _usage(event.get("usage")) or self.usage
        if choices := event.get("choices"):
            # OpenAI-shaped chunk (newer models): take its delta as it is.
            delta = (choices[0] or {}).get("delta") or {}
            self.tool_calls += len(delta.get("tool_calls") or [])
            if delta.get("content") or delta.get("tool_calls"):
                out.append(self.chunks.delta({k: v for k, v in delta.items() if k in ("content", "tool_calls")}))
            return out
        response = event.get("response")
        if isinstance(response, str) and response:
            out.append(self.chunks.delta({"content": response}))
        deltas = []
        for raw in event.get("tool_calls") or []:
            if "index" in raw and not raw.get("name") and not (raw.get("function") or {}).get("name"):
                # a continuation: more argument text for a call already started
                arguments = (raw.get("function") or {}).get("arguments") or ""
                deltas.append({"index": raw["index"], "function": {"arguments": arguments}})
                continue
            index = raw.get("index", self.tool_calls)
            deltas.append({"index": index, **_tool_call(raw)})
            self.tool_calls = max(self.tool_calls, index + 1)
        if deltas:
            out.append(self.chunks.delta({"tool_calls": deltas}))
        return out

    def close(self) -> list[dict]:
        finish = "tool_calls" if self.tool_calls else "stop"
        out = [self.chunks.delta({}, finish)]
        if self.usage:
            out.append(self.chunks.usage(self.usage))
        return out


# --- errors ----------------------------------------------------------------------------------------


def _errors(body: Any) -> list[dict]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return []


def _redacted(text: str, api_key: str | None) -> str:
    # The stored key is `account_id:token`; an error that quotes a secret quotes the token alone.
    return redact(text, (api_key or "").partition(":")[2] or api_key)


def error_from_response(response: httpx.Response, api_key: str | None = None) -> UpstreamError:
    errors = _errors(response_json(response))
    codes = {int(e["code"]) for e in errors if str(e.get("code", "")).isdigit()}
    message = "; ".join(str(e.get("message", "")) for e in errors) or response.text[:300] or response.reason_phrase
    message = _redacted(message, api_key)
    status = response.status_code
    kind = kind_for_status(status)
    retry_after = None
    if codes & NOT_FOUND_CODES:
        kind = ErrorKind.NOT_FOUND
    elif codes & CONTEXT_CODES or (status in (400, 413) and _CONTEXT_LENGTH.search(message)):
        kind = ErrorKind.CONTEXT_LENGTH
    elif codes == {10000}:
        kind = ErrorKind.AUTH
    if kind is ErrorKind.RATE_LIMITED:
        retry_after = parse_retry_after(response.headers)
        if DAILY_ALLOCATION_CODE in codes:
            retry_after = max(retry_after or 0.0, seconds_until_midnight("UTC"))
    return UpstreamError(
        kind, f"Workers AI {status}: {message}", status=status, retry_after=retry_after, headers=response.headers
    )


def _stream_error(event: dict, api_key: str | None) -> UpstreamError:
    errors = _errors(event) or [event.get("error") if isinstance(event.get("error"), dict) else {"message": event.get("error")}]
    message = _redacted("; ".join(str(e.get("message", "")) for e in errors) or "error in stream", api_key)
    kind = ErrorKind.CONTEXT_LENGTH if _CONTEXT_LENGTH.search(message) else ErrorKind.SERVER
    return UpstreamError(kind, f"Workers AI stream error: {message}")


# --- adapter ---------------------------------------------------------------------------------------


class CloudflareAdapter(Adapter):
    name = "cloudflare"

    def _openai_layer(self, target: Target) -> Target | None:
        """For models that only chat through Workers AI's OpenAI-compatible endpoint: that endpoint's target."""
        if not target.model.startswith(OPENAI_LAYER_PREFIXES):
            return None
        account_id, token = split_key(target.api_key)
        return replace(target, base_url=f"{target.base_url.rstrip('/')}/accounts/{account_id}/ai/v1", api_key=token)

    def _url(self, target: Target, account_id: str) -> str:
        return f"{target.base_url.rstrip('/')}/accounts/{account_id}/ai/run/{target.model.lstrip('/')}"

    def _headers(self, target: Target, token: str, content_type: str = "application/json") -> dict[str, str]:
        return {**target.headers, "authorization": f"Bearer {token}", "content-type": content_type}

    async def _run(
        self,
        client: httpx.AsyncClient,
        target: Target,
        timeouts: Timeouts,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        account_id, token = split_key(target.api_key)
        return await send(
            client,
            "POST",
            self._url(target, account_id),
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=self._headers(target, token, content_type),
            json=json_body,
            content=content,
        )

    async def _result(self, client: httpx.AsyncClient, target: Target, timeouts: Timeouts, **kwargs: Any) -> tuple[Any, httpx.Response]:
        response = await self._run(client, target, timeouts, **kwargs)
        body = response_json(response)
        if not isinstance(body, dict) or body.get("success") is False:
            raise error_from_response(response, target.api_key)
        return body.get("result"), response

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        if openai_target := self._openai_layer(target):
            return await _OPENAI.chat(client, openai_target, request, timeouts)
        body = build_chat_request(drop_params(request, target.drop_params), stream=False)
        result, response = await self._result(client, target, timeouts, json_body=body)
        answer = chat_completion_from_result(result, target.model)
        return UpstreamResponse(answer, _to_usage(answer.get("usage")), response.headers)

    async def chat_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        if openai_target := self._openai_layer(target):
            return await _OPENAI.chat_stream(client, openai_target, request, timeouts)
        account_id, token = split_key(target.api_key)
        body = build_chat_request(drop_params(request, target.drop_params), stream=True)
        response = await open_stream(
            client,
            self._url(target, account_id),
            provider=PROVIDER,
            timeouts=timeouts,
            to_error=lambda r: error_from_response(r, target.api_key),
            headers=self._headers(target, token),
            json=body,
        )
        translator = _StreamTranslator(target.model)

        async def chunks() -> AsyncIterator[dict]:
            done = False
            try:
                async for sse in sse_events(response, timeouts, PROVIDER):
                    if sse.data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        event = orjson.loads(sse.data)
                    except ValueError:
                        raise UpstreamError(ErrorKind.SERVER, "Workers AI sent a stream event that is not JSON") from None
                    if not isinstance(event, dict):
                        continue
                    if sse.event == "error" or event.get("errors") or event.get("error") or event.get("success") is False:
                        raise _stream_error(event, target.api_key)
                    for chunk in translator.feed(event):
                        yield chunk
                if not done:
                    raise UpstreamError(ErrorKind.CONNECTION, "Workers AI's stream ended before [DONE]")
                for chunk in translator.close():
                    yield chunk
            finally:
                await response.aclose()

        return UpstreamStream(response.headers, chunks(), response.aclose)

    async def embeddings(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        texts = embedding_inputs(request)
        result, response = await self._result(client, target, timeouts, json_body={"text": texts})
        vectors = (result or {}).get("data") if isinstance(result, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise UpstreamError(ErrorKind.SERVER, "Workers AI returned a different number of embeddings than inputs")
        wanted = request.get("dimensions")
        if wanted and vectors and len(vectors[0]) != wanted:
            raise _bad_request(f"{target.model} makes {len(vectors[0])}-dimension vectors; `dimensions` cannot change that")
        prompt_tokens = rough_tokens(texts)
        answer = embedding_list(
            vectors,
            model=target.model,
            encoding_format=request.get("encoding_format"),
            prompt_tokens=prompt_tokens,
        )
        return UpstreamResponse(answer, Usage(prompt_tokens, 0), response.headers)

    async def images(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        prompt = request.get("prompt")
        if not prompt:
            raise _bad_request("`prompt` is required")
        body: dict[str, Any] = {"prompt": prompt, "steps": request.get("steps") or DEFAULT_IMAGE_STEPS}
        if request.get("seed") is not None:
            body["seed"] = request["seed"]
        images: list[tuple[str, str]] = []
        response: httpx.Response | None = None
        for _ in range(max(1, int(request.get("n") or 1))):
            response = await self._run(client, target, timeouts, json_body=body)
            images.append(self._image_of(response, target))
        as_url = request.get("response_format") == "url"
        data = [
            {"url": f"data:{mime};base64,{b64}", "revised_prompt": prompt} if as_url else {"b64_json": b64, "revised_prompt": prompt}
            for b64, mime in images
        ]
        return UpstreamResponse({"created": int(time.time()), "data": data}, None, response.headers)

    def _image_of(self, response: httpx.Response, target: Target) -> tuple[str, str]:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("image/"):
            return base64.b64encode(response.content).decode(), content_type.split(";")[0]
        body = response_json(response)
        image = ((body or {}).get("result") or {}).get("image") if isinstance(body, dict) else None
        if not image:
            if _errors(body):
                raise error_from_response(response, target.api_key)
            raise UpstreamError(ErrorKind.SERVER, "Workers AI answered without an image")
        return image, "image/jpeg" if image.startswith("/9j/") else "image/png"

    async def transcription(
        self, client: httpx.AsyncClient, target: Target, file: tuple[str, bytes, str], fields: dict, timeouts: Timeouts
    ) -> UpstreamResponse:
        _, audio, _ = file
        response_format = fields.get("response_format") or "json"
        if response_format not in ("json", "text", "verbose_json", "vtt", "srt"):
            raise _bad_request(f"response_format {response_format!r} is not available from Workers AI Whisper")
        if "whisper-large-v3-turbo" in target.model:
            body: dict[str, Any] = {"audio": base64.b64encode(audio).decode()}
            if fields.get("language"):
                body["language"] = fields["language"]
            if fields.get("prompt"):
                body["initial_prompt"] = fields["prompt"]
            result, response = await self._result(client, target, timeouts, json_body=body)
        else:
            result, response = await self._result(
                client, target, timeouts, content=audio, content_type="application/octet-stream"
            )
        if not isinstance(result, dict) or not isinstance(result.get("text"), str):
            raise UpstreamError(ErrorKind.SERVER, "Workers AI answered without a transcript")
        text = result["text"]
        if response_format == "text":
            return UpstreamResponse(text, None, response.headers)
        if response_format in ("vtt", "srt"):
            if not result.get("vtt"):
                raise UpstreamError(ErrorKind.SERVER, "Workers AI answered without WebVTT")
            subtitles = result["vtt"] if response_format == "vtt" else vtt_to_srt(result["vtt"])
            return UpstreamResponse(subtitles, None, response.headers)
        if response_format == "verbose_json":
            info = result.get("transcription_info") or {}
            body = {
                "task": "transcribe",
                "language": info.get("language") or fields.get("language") or "",
                "duration": info.get("duration") or _duration(result),
                "text": text,
            }
            if result.get("words"):
                body["words"] = [
                    {"word": w.get("word", ""), "start": w.get("start", 0.0), "end": w.get("end", 0.0)} for w in result["words"]
                ]
            if result.get("segments"):
                body["segments"] = [
                    {"id": i, "start": s.get("start", 0.0), "end": s.get("end", 0.0), "text": s.get("text", "")}
                    for i, s in enumerate(result["segments"])
                ]
            return UpstreamResponse(body, None, response.headers)
        return UpstreamResponse({"text": text}, None, response.headers)


_OPENAI = OpenAIAdapter()


def vtt_to_srt(vtt: str) -> str:
    """WebVTT (what Workers AI Whisper returns) → SRT: numbered cues, comma before the milliseconds."""
    cues = []
    for block in re.split(r"\r?\n\s*\r?\n", vtt.strip()):
        lines = block.strip().splitlines()
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # the WEBVTT header, NOTE and STYLE blocks
        start, _, end = lines[timing].partition("-->")
        times = [_srt_time(start.strip()), _srt_time(end.strip().split(" ")[0])]
        cues.append(f"{len(cues) + 1}\n{times[0]} --> {times[1]}\n" + "\n".join(lines[timing + 1 :]))
    return "\n\n".join(cues) + "\n"


def _srt_time(stamp: str) -> str:
    # WebVTT may leave out the hours; SRT always has them.
    if stamp.count(":") == 1:
        stamp = "00:" + stamp
    return stamp.replace(".", ",")


def _duration(result: dict) -> float:
    ends = [w.get("end", 0.0) for w in result.get("words") or []] + [s.get("end", 0.0) for s in result.get("segments") or []]
    return max(ends, default=0.0)
