"""Cloudflare Workers AI wire format (native): ``POST /<provider>/<prefix>/accounts/{account}/ai/run/{model}``.

base_url ``.../cloudflare/client/v4``; the key is the Bearer token (the account id is in the path and
recorded in the call's path). The model id picks the task, as on Workers AI:
- ``bge``/``embedding`` → embeddings: ``{text: str | [str]}`` → ``{shape: [n, d], data, pooling}``;
- ``flux`` → ``{prompt, steps<=8}`` → ``{image: base64}``; ``stable-diffusion`` → raw PNG bytes;
- ``whisper-large-v3-turbo`` → ``{audio: base64}`` JSON; other ``whisper`` → the raw audio bytes as body;
  → ``{text, word_count, words, vtt}`` (turbo: ``transcription_info`` and ``segments`` instead of words);
- anything else → chat: ``{messages, stream?, tools?, ...}`` → ``{response, tool_calls?, usage}``; with
  ``stream`` SSE ``data: {"response": "..."}`` pieces, a usage event, then ``data: [DONE]``.
``gpt-oss`` models want Responses-API ``input`` here (a 5006 error for ``messages``); their chat is the
OpenAI format's ``.../accounts/{account}/ai/v1/chat/completions``. Message content must be a string (a list is Workers AI's 5006 type mismatch). Tool calls come back in
Workers AI's ``{name, arguments: {...}}`` shape for ``hermes`` models and OpenAI's shape otherwise (streamed
as deltas).

Every answer is wrapped ``{"result", "success", "errors", "messages"}``; errors use Workers AI codes:
no/invalid key → 401 ``10000 Authentication error``; a missing model → 400 ``5007 No such model``; the
``429`` directive → 429 ``3036`` (daily free allocation used up), other 429s (``fail=N:429``, ``rpm=``) →
429 ``3040`` with ``Retry-After``; ``ctx=`` → 400 ``5021`` context window; 502 → an HTML page; ``midfail``
→ a ``data: {"success": false, "errors": [...]}`` event (the emulator's reading of an in-band failure).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import content
from .behaviour import ERROR, GONE, Decision, Engine
from .openai import bearer_key, provider_of

MAX_FLUX_STEPS = 8


def envelope(result: Any) -> dict:
    return {"result": result, "success": True, "errors": [], "messages": []}


def cf_error(status: int, code: int, message: str, headers: dict | None = None) -> JSONResponse:
    body = {"result": None, "success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(decision: Decision, model: str) -> Response:
    error = decision.error
    if decision.action == GONE or error is None:
        return Response(status_code=499)
    headers = decision.headers
    status = error.status
    if decision.spec is None or status == 401:
        return cf_error(401, 10000, "Authentication error", headers)
    if status == 403:
        return cf_error(403, 10000, "Authentication error", headers)
    if status == 404:
        return cf_error(400, 5007, f"No such model {model} or task", headers)
    if status == 429:
        if decision.spec.always_status == 429:
            message = ("You have used up your daily free allocation of 10,000 neurons. Please upgrade to "
                       "Cloudflare's Workers Paid plan if you would like to continue usage.")
            return cf_error(429, 3036, message, {k: v for k, v in headers.items() if k.lower() != "retry-after"})
        return cf_error(429, 3040, "Capacity temporarily exceeded, please try again.", headers)
    if status == 400 and error.code == "context_length_exceeded":
        limit = decision.spec.ctx or 0
        return cf_error(400, 5021, "The estimated number of input and maximum output tokens exceeded this model "
                                   f"context window limit ({limit}).", headers)
    if status == 502:
        return Response("<html><body><h1>502 Bad gateway</h1><p>cloudflare</p></body></html>", status_code=502,
                        media_type="text/html", headers=headers)
    if status >= 500:
        return cf_error(status, 3043, "Internal server error", headers)
    return cf_error(status, 5006, error.message, headers)


def task_of(model: str) -> str:
    name = model.lower()
    if "bge" in name or "embedding" in name:
        return "embeddings"
    if "flux" in name or "stable-diffusion" in name:
        return "image"
    if "whisper" in name:
        return "asr"
    return "chat"


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _tools(body: dict) -> list[dict]:
    """Tools in either Workers AI's ``{name, parameters}`` or OpenAI's ``{type, function}`` shape."""
    return [{"type": "function", "function": tool.get("function") or tool} for tool in body.get("tools") or []]


def routes(engine: Engine) -> list[Route]:
    async def run(request: Request) -> Response:
        model = request.path_params["model"]
        task = task_of(model)
        if task == "asr" and "whisper-large-v3-turbo" not in model:
            return await whisper_bytes(request, model)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=None)
            return cf_error(400, 5006, "Type mismatch: the request body must be a JSON object")
        if task == "embeddings":
            return await embeddings(request, model, body)
        if task == "image":
            return await image(request, model, body)
        if task == "asr":
            return await whisper_json(request, model, body)
        return await chat(request, model, body)

    async def admit(request: Request, model: str, body: Any, est_tokens: int, stream: bool = False) -> Decision:
        return await engine.admit(request, provider=provider_of(request), key=bearer_key(request), model=model,
                                  body=body, est_tokens=est_tokens, stream=stream)

    async def chat(request: Request, model: str, body: dict) -> Response:
        messages = body.get("messages")
        stream = bool(body.get("stream"))
        problem = None
        if "gpt-oss" in model and "input" not in body:
            # These take the Responses API format on /ai/run (chat goes through /ai/v1/chat/completions).
            problem = "Required properties at '/' are 'input'"
        elif not isinstance(messages, list) or not messages:
            problem = "Required properties at '/' are 'messages' or 'prompt'"
        else:
            for index, message in enumerate(messages):
                if message.get("role") not in ("system", "user", "assistant", "tool"):
                    problem = f"Value at '/messages/{index}/role' is not one of system, user, assistant, tool"
                elif not isinstance(message.get("content"), str):
                    problem = f"Type mismatch of '/messages/{index}/content', 'array' not in 'string'"
        if problem:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=body,
                          stream=stream)
            return cf_error(400, 5006, problem)
        prompt_tokens = content.estimate_prompt_tokens(messages)
        decision = await admit(request, model, body, prompt_tokens, stream)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)

        tools = _tools(body)
        json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        if content.wants_tool(messages, tools, None):
            function = content.chosen_tool(tools, None)
            arguments = content.example_arguments(function.get("parameters"))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": content.estimate_tokens(json.dumps(arguments)),
                     "total_tokens": prompt_tokens + content.estimate_tokens(json.dumps(arguments))}
            native = "hermes" in model
            call = ({"name": function["name"], "arguments": arguments} if native else
                    {"id": "chatcmpl-tool-emu0", "type": "function",
                     "function": {"name": function["name"], "arguments": json.dumps(arguments)}})
            if not stream:
                return engine.json(decision, envelope({"response": None if native else "", "tool_calls": [call],
                                                       "usage": usage}))
            if native:
                frames = [_sse({"response": "", "tool_calls": [call]})]
            else:
                frames = [_sse({"response": "", "tool_calls": [{
                    "index": 0, "id": call["id"], "type": "function",
                    "function": {"name": function["name"], "arguments": ""}}]})]
                frames += [_sse({"response": "", "tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                           for piece in content.split_chunks(call["function"]["arguments"])]
            tail = [_sse({"response": "", "usage": usage}), b"data: [DONE]\n\n"]
            return engine.stream(decision, frames, tail, error_frames=[_failure()])

        text = content.reply_text(messages, json_mode=json_mode)
        max_tokens = body.get("max_tokens", 256)
        if content.estimate_tokens(text) > max_tokens:
            text = text[: max_tokens * 4]
        completion_tokens = content.estimate_tokens(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if not stream:
            return engine.json(decision, envelope({"response": text, "tool_calls": [], "usage": usage}))
        frames = [_sse({"response": piece, "p": "abcdefgh"}) for piece in content.split_chunks(text)]
        tail = [_sse({"response": "", "usage": usage}), b"data: [DONE]\n\n"]
        return engine.stream(decision, frames, tail, error_frames=[_failure()])

    async def embeddings(request: Request, model: str, body: dict) -> Response:
        texts = body.get("text")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=body)
            return cf_error(400, 5006, "Required properties at '/' are 'text'")
        decision = await admit(request, model, body, sum(content.estimate_tokens(t) for t in texts))
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        vectors = [content.embedding_vector(text) for text in texts]
        return engine.json(decision, envelope({"shape": [len(vectors), len(vectors[0])], "data": vectors,
                                               "pooling": "mean"}))

    async def image(request: Request, model: str, body: dict) -> Response:
        prompt = body.get("prompt")
        steps = body.get("steps", 4)
        problem = None
        if not isinstance(prompt, str) or not prompt:
            problem = "Required properties at '/' are 'prompt'"
        elif "flux" in model and (not isinstance(steps, int) or steps > MAX_FLUX_STEPS):
            problem = f"Value at '/steps' must be <= {MAX_FLUX_STEPS}"
        if problem:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=body)
            return cf_error(400, 5006, problem)
        decision = await admit(request, model, body, content.estimate_tokens(prompt))
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        if "flux" in model:
            return engine.json(decision, envelope({"image": content.TINY_PNG_B64}))
        return engine.response(decision, content.TINY_PNG, "image/png")

    def transcript(model: str, size: int) -> dict:
        text = content.transcript_text("audio", size)
        words = [{"word": word, "start": float(i), "end": float(i) + 0.5} for i, word in enumerate(text.split())]
        vtt = f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n"
        if "whisper-large-v3-turbo" in model:
            return {"transcription_info": {"language": "en", "language_probability": 0.99, "duration": words[-1]["end"]},
                    "text": text, "word_count": len(words), "vtt": vtt,
                    "segments": [{"start": 0.0, "end": words[-1]["end"], "text": text, "words": words}]}
        return {"text": text, "word_count": len(words), "words": words, "vtt": vtt}

    async def whisper_bytes(request: Request, model: str) -> Response:
        audio = await request.body()
        form = {"audio": {"size": len(audio), "content_type": request.headers.get("content-type")}}
        if not audio:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=None,
                          form=form)
            return cf_error(400, 3003, "Request is missing headers or body: body")
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request), model=model,
                                      body=None, form=form)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        return engine.json(decision, envelope(transcript(model, len(audio))))

    async def whisper_json(request: Request, model: str, body: dict) -> Response:
        try:
            audio = base64.b64decode(body.get("audio") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            audio = b""
        if not audio:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=model, body=body)
            return cf_error(400, 5006, "Type mismatch of '/audio': a base64 string is required")
        decision = await admit(request, model, body, 0)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        return engine.json(decision, envelope(transcript(model, len(audio))))

    async def models_search(request: Request) -> Response:
        # ``engine.models[provider]`` entries: ids (a task is derived from the id) or dicts with
        # "task" and "properties" as Workers AI lists them.
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request),
                                      model=None, body=None)
        if decision.action in (ERROR, GONE):
            return error_response(decision, "")
        tasks = {"chat": "Text Generation", "embeddings": "Text Embeddings", "image": "Text-to-Image",
                 "asr": "Automatic Speech Recognition"}
        result = []
        for entry in engine.models.get(provider_of(request), ["@cf/meta/llama-3.1-8b-instruct"]):
            item = entry if isinstance(entry, dict) else {"name": entry}
            item = {"id": item["name"], "task": {"name": tasks.get(task_of(item["name"]), "Text Generation")},
                    "properties": [], **item}
            result.append(item)
        return engine.json(decision, envelope(result))

    return [
        Route("/{prefix:path}/accounts/{account_id}/ai/run/{model:path}", run, methods=["POST"]),
        Route("/{prefix:path}/accounts/{account_id}/ai/models/search", models_search, methods=["GET"]),
    ]


def _failure() -> bytes:
    return _sse({"success": False, "errors": [{"code": 3043, "message": "Internal server error"}]})
