"""OpenAI wire format, under any path prefix: ``/<provider>/<anything>/chat/completions`` and friends.

The first path segment is the provider name recorded for the call, so ``http://HOST:PORT/groq/openai/v1``
and ``http://HOST:PORT/mistral/v1`` are two providers of one emulator.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import content
from .behaviour import ERROR, GONE, Decision, Engine

DEFAULT_MODELS = ["echo-small", "echo-large", "embed-small"]


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def provider_of(request: Request) -> str:
    return request.url.path.strip("/").split("/", 1)[0]


def error_response(decision: Decision) -> Response:
    error = decision.error
    if decision.action == GONE or error is None:
        return Response(status_code=499)
    body = {"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=decision.headers)


def _bad_request(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=400)


async def _json_body(request: Request) -> dict | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chat_id(model: str) -> str:
    return f"chatcmpl-emu-{abs(hash(model)) % 10**8}-{time.monotonic_ns() % 10**9}"


def routes(engine: Engine) -> list[Route]:
    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=None, body=None)
            return _bad_request("We could not parse the JSON body of your request.")
        model = body.get("model")
        messages = body.get("messages") or []
        stream = bool(body.get("stream"))
        prompt_tokens = content.estimate_prompt_tokens(messages)
        decision = await engine.admit(
            request, provider=provider_of(request), key=bearer_key(request), model=model, body=body,
            est_tokens=prompt_tokens, stream=stream,
        )
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not model or not isinstance(messages, list) or not messages:
            decision.finish(400)
            return _bad_request("'model' and a non-empty 'messages' are required.")

        tools = body.get("tools")
        response_format = (body.get("response_format") or {}).get("type")
        json_mode = response_format in ("json_object", "json_schema")
        tool_call = None
        if content.wants_tool(messages, tools, body.get("tool_choice")):
            function = content.chosen_tool(tools, body.get("tool_choice"))
            tool_call = {
                "id": "call_emu_0",
                "type": "function",
                "function": {
                    "name": function.get("name"),
                    "arguments": json.dumps(content.example_arguments(function.get("parameters"))),
                },
            }
        spec = decision.spec
        if tool_call and spec and spec.textcall:
            # Written as text instead of a tool call, as free models often do.
            function = tool_call["function"]
            text = content.tool_call_text(spec.textcall, function["name"], json.loads(function["arguments"]))
            if spec.textcall_lead:
                text = f"{content.TOOL_CALL_LEAD}\n{text}"
            tool_call = None
        else:
            text = None if tool_call else content.reply_text(messages, json_mode=json_mode)
        if tool_call and spec and spec.doubleargs:
            tool_call["function"]["arguments"] = json.dumps(tool_call["function"]["arguments"])
        if text is not None and spec and spec.thinktag:
            text = f"<think>{content.THINK_TAG_TEXT}</think>\n\n{text}"
        # As vLLM-based servers do: the answer ends before a stop sequence, and the choice names it.
        stopped_by = None
        if text is not None and body.get("stop"):
            text, stopped_by = content.cut_at_stop(text, body["stop"])
        if spec and spec.empty:
            text, tool_call = "", None
        completion_tokens = content.estimate_tokens(tool_call["function"]["arguments"] if tool_call else text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        finish_reason = "tool_calls" if tool_call else "stop"
        chat_id = _chat_id(model)
        created = int(time.time())

        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_call:
                message["tool_calls"] = [tool_call]
            answer = {
                "id": chat_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
                "usage": usage,
            }
            if stopped_by:
                answer["choices"][0]["stop_reason"] = stopped_by
            return engine.json(decision, answer)

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }

        frames = [_sse(chunk({"role": "assistant", "content": ""}))]
        thinking = decision.spec.think if decision.spec else 0
        frames.extend(_sse(chunk({"content": None, "reasoning": f"thought {n}. "})) for n in range(thinking))
        if tool_call:
            arguments = tool_call["function"]["arguments"]
            frames.append(_sse(chunk({"tool_calls": [{
                "index": 0, "id": tool_call["id"], "type": "function",
                "function": {"name": tool_call["function"]["name"], "arguments": ""},
            }]})))
            for piece in content.split_chunks(arguments):
                frames.append(_sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})))
        elif text:
            frames.extend(_sse(chunk({"content": piece})) for piece in content.split_chunks(text))
        bad_after = decision.spec.badchunk_after if decision.spec else None
        if bad_after is not None:
            frames.insert(1 + thinking + bad_after, _sse(chunk({"content": 5})))
        last = chunk({}, finish_reason)
        if stopped_by:
            last["choices"][0]["stop_reason"] = stopped_by
        tail = [_sse(last)]
        if (body.get("stream_options") or {}).get("include_usage"):
            tail.append(_sse({
                "id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage,
            }))
        tail.append(b"data: [DONE]\n\n")
        # OpenRouter's shape for a failure after the status line: an error object in a data event.
        failure = [_sse({"error": {"code": 502, "message": "Upstream provider failed mid-stream."}})]
        return engine.stream(decision, frames, tail, error_frames=failure)

    async def fim_completions(request: Request) -> Response:
        """Mistral's fill in the middle: ``prompt`` (+ ``suffix``) in, chat-shaped answer or chunks out."""
        body = await _json_body(request)
        if body is None:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=None, body=None)
            return _bad_request("We could not parse the JSON body of your request.")
        model, prompt, suffix = body.get("model"), body.get("prompt"), body.get("suffix")
        stream = bool(body.get("stream"))
        prompt_tokens = content.estimate_tokens(f"{prompt or ''}{suffix or ''}")
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request), model=model,
                                      body=body, est_tokens=prompt_tokens, stream=stream)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not model or not isinstance(prompt, str) or "messages" in body:
            decision.finish(400)
            return _bad_request("'model' and 'prompt' are required; 'messages' is not a FIM field.")
        text = content.fim_text(prompt, suffix)
        completion_tokens = content.estimate_tokens(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        fim_id, created = _chat_id(model), int(time.time())
        if not stream:
            return engine.json(decision, {
                "id": fim_id, "object": "chat.completion", "created": created, "model": model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            })

        def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
            return {"id": fim_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        frames = [_sse(chunk({"role": "assistant", "content": ""}))]
        frames.extend(_sse(chunk({"content": piece})) for piece in content.split_chunks(text))
        # Mistral sends the usage on the last chunk, stream_options or not.
        tail = [_sse(chunk({}, "stop", usage=usage)), b"data: [DONE]\n\n"]
        return engine.stream(decision, frames, tail)

    async def embeddings(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=None, body=None)
            return _bad_request("We could not parse the JSON body of your request.")
        model = body.get("model")
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs or []]
        prompt_tokens = sum(content.estimate_tokens(text) for text in texts)
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request),
                                      model=model, body=body, est_tokens=prompt_tokens)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not texts:
            decision.finish(400)
            return _bad_request("'input' is required.")
        dimensions = int(body.get("dimensions") or content.DEFAULT_EMBEDDING_DIMENSIONS)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = content.embedding_vector(text, dimensions)
            data.append({
                "object": "embedding",
                "index": index,
                "embedding": content.embedding_base64(vector) if as_base64 else vector,
            })
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return engine.json(decision, answer)

    async def images(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=None, body=None)
            return _bad_request("We could not parse the JSON body of your request.")
        prompt = body.get("prompt") or ""
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request),
                                      model=body.get("model"), body=body,
                                      est_tokens=content.estimate_tokens(prompt))
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not prompt:
            decision.finish(400)
            return _bad_request("'prompt' is required.")
        count = int(body.get("n") or 1)
        if body.get("response_format") == "url":
            url = f"{request.base_url}_emulator/tiny.png"
            items = [{"url": url, "revised_prompt": prompt} for _ in range(count)]
        else:
            items = [{"b64_json": content.TINY_PNG_B64, "revised_prompt": prompt} for _ in range(count)]
        return engine.json(decision, {"created": int(time.time()), "data": items})

    async def transcriptions(request: Request) -> Response:
        form = await request.form()
        fields: dict[str, Any] = {}
        upload: UploadFile | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                fields[name] = {"filename": value.filename, "size": len(data), "content_type": value.content_type}
                if name == "file":
                    upload = value
                    upload_size = len(data)
            elif name in fields:
                previous = fields[name]
                fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                fields[name] = value
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request),
                                      model=fields.get("model"), body=None, form=fields)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if upload is None:
            decision.finish(400)
            return _bad_request("'file' is required.")
        text = content.transcript_text(upload.filename or "audio", upload_size)
        response_format = fields.get("response_format") or "json"
        if response_format == "text":
            return engine.response(decision, text, "text/plain")
        if response_format in ("srt", "vtt"):
            cue = "1\n00:00:00,000 --> 00:00:01,000\n" if response_format == "srt" else "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n"
            return engine.response(decision, f"{cue}{text}\n", "text/plain")
        if response_format == "verbose_json":
            answer = {
                "task": "transcribe",
                "language": fields.get("language") or "english",
                "duration": 1.0,
                "text": text,
                "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": text}],
            }
            return engine.json(decision, answer)
        return engine.json(decision, {"text": text})

    async def speech(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            engine.record(request, provider=provider_of(request), key=bearer_key(request), model=None, body=None)
            return _bad_request("We could not parse the JSON body of your request.")
        text = body.get("input") or ""
        decision = await engine.admit(request, provider=provider_of(request), key=bearer_key(request),
                                      model=body.get("model"), body=body, est_tokens=content.estimate_tokens(text))
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not text:
            decision.finish(400)
            return _bad_request("'input' is required.")
        audio, content_type = content.speech_audio(text, body.get("response_format") or "mp3")
        return engine.response(decision, audio, content_type)

    async def models(request: Request) -> Response:
        # One path, three wires: Gemini's models.list (x-goog-api-key), Cohere's /v1/models (a provider
        # segment starting with "cohere", as the host tells them apart for real) and OpenAI's GET /models.
        # ``engine.models[provider]`` entries are ids or dicts of the extra fields that wire lists.
        provider = provider_of(request)
        google_key = request.headers.get("x-goog-api-key")
        key = google_key or bearer_key(request)
        decision = await engine.admit(request, provider=provider, key=key, model=None, body=None)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        entries = [e if isinstance(e, dict) else {"id": e} for e in engine.models.get(provider, DEFAULT_MODELS)]
        if google_key:
            listed = [{"name": f"models/{e['id']}", **{k: v for k, v in e.items() if k != "id"}} for e in entries]
            return engine.json(decision, {"models": listed})
        if provider.startswith("cohere"):
            listed = [{"name": e["id"], **{k: v for k, v in e.items() if k != "id"}} for e in entries]
            return engine.json(decision, {"models": listed})
        data = [{"object": "model", "created": 0, "owned_by": "emulator", **e} for e in entries]
        return engine.json(decision, {"object": "list", "data": data})

    async def tiny_png(request: Request) -> Response:
        return Response(content.TINY_PNG, media_type="image/png")

    return [
        Route("/_emulator/tiny.png", tiny_png, methods=["GET"]),
        Route("/{prefix:path}/chat/completions", chat_completions, methods=["POST"]),
        Route("/{prefix:path}/fim/completions", fim_completions, methods=["POST"]),
        Route("/{prefix:path}/embeddings", embeddings, methods=["POST"]),
        Route("/{prefix:path}/images/generations", images, methods=["POST"]),
        Route("/{prefix:path}/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/{prefix:path}/audio/speech", speech, methods=["POST"]),
        Route("/{prefix:path}/models", models, methods=["GET"]),
    ]
