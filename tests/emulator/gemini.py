"""Gemini API wire format (native ``v1beta``): ``/<provider>/<prefix>/models/{model}:{method}``.

Methods: ``generateContent``, ``streamGenerateContent`` (``?alt=sse``: ``data: {GenerateContentResponse}``
events, no ``[DONE]``; without it, one JSON array), ``embedContent``, ``batchEmbedContents``. The key comes
in ``x-goog-api-key`` (or ``?key=``). Requests are checked the way Gemini checks them (roles ``user`` and
``model`` only, ``functionResponse`` names must match a declared function, Gemini 3 models want the first
function call of a turn signed), and errors use Google's shape::

    {"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED",
               "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", ...},
                           {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}

An invalid key is a 400 ``INVALID_ARGUMENT`` with ``ErrorInfo.reason == "API_KEY_INVALID"``, as in real
life; 429s carry ``RetryInfo`` and no ``Retry-After`` header.

Extra triggers for this format:
- a key directive ``perday`` makes its 429s name a per-day quota (``...PerDay...`` quota id);
- the last user text containing ``blocked prompt`` → ``promptFeedback.blockReason: SAFETY`` and no
  candidates; ``blocked answer`` → a candidate with ``finishReason: SAFETY`` and no content.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import content
from .behaviour import ERROR, GONE, Decision, Engine
from .openai import provider_of

SIGNATURE = "ZW11bGF0b3Itc2lnbmF0dXJl"  # base64 of "emulator-signature"
SKIP_SIGNATURE = "skip_thought_signature_validator"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class InvalidRequest(Exception):
    pass


def google_error(status: int, message: str, details: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _retry_delay(seconds: float) -> str:
    return f"{math.ceil(seconds)}s" if seconds >= 1 else f"{seconds:.3f}s"


def error_response(decision: Decision, model: str | None) -> Response:
    error = decision.error
    if decision.action == GONE or error is None:
        return Response(status_code=499)
    # Gemini sends no Retry-After header: the delay lives in RetryInfo only.
    headers = {k: v for k, v in decision.headers.items() if k.lower() != "retry-after"}
    status = error.status
    if decision.spec is None:
        message = (
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API."
        )
        return google_error(403, message, headers=headers)
    if status == 401:
        details = [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }]
        return google_error(400, "API key not valid. Please pass a valid API key.", details, headers)
    if status == 403:
        return google_error(403, "Permission denied: Consumer has been suspended.", headers=headers)
    if status == 404:
        message = (
            f"models/{model} is not found for API version v1beta, or is not supported for generateContent. "
            "Call ListModels to see the list of available models and their supported methods."
        )
        return google_error(404, message, headers=headers)
    if status == 429:
        per_day = "perday" in [part.strip().lower() for part in decision.spec.raw.split(";")[1:]]
        quota_id = (
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
            if per_day
            else "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model or ""},
                    "quotaValue": "10",
                }],
            },
            {"@type": "type.googleapis.com/google.rpc.Help",
             "links": [{"description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo",
             "retryDelay": _retry_delay(error.retry_after or 7.0)},
        ]
        message = (
            "You exceeded your current quota, please check your plan and billing details. "
            f"For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
            f"Please retry in {error.retry_after or 7.0:.1f}s."
        )
        return google_error(429, message, details, headers)
    if status == 400 and error.code == "context_length_exceeded":
        limit = decision.spec.ctx if decision.spec else 0
        message = f"The input token count exceeds the maximum number of tokens allowed ({limit})."
        return google_error(400, message, headers=headers)
    if status == 502:
        return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502,
                        media_type="text/html", headers=headers)
    if status == 503:
        return google_error(503, "The model is overloaded. Please try again later.", headers=headers)
    if status >= 500:
        message = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        return google_error(status, message, headers=headers)
    return google_error(status, error.message, headers=headers)


def _key(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query_params.get("key") or None


# --- request reading -------------------------------------------------------------------------------


def _declarations(body: dict) -> list[dict]:
    declarations = []
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise InvalidRequest("parameters and parametersJsonSchema are mutually exclusive.")
            if not declaration.get("name"):
                raise InvalidRequest("* GenerateContentRequest.tools[0].function_declarations[0].name: Name cannot be empty.")
            declarations.append({
                "name": declaration["name"],
                "description": declaration.get("description", ""),
                "parameters": declaration.get("parametersJsonSchema") or declaration.get("parameters"),
            })
    return declarations


def _tool_choice(body: dict) -> Any:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        names = config.get("allowedFunctionNames") or []
        return {"type": "function", "function": {"name": names[0]}} if len(names) == 1 else "required"
    return "auto"


def _openai_messages(body: dict, model: str, declared: set[str]) -> list[dict]:
    """The request's contents as OpenAI-style messages, so the shared answer rules apply."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    messages: list[dict] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        messages.append({"role": "system", "content": " ".join(p.get("text", "") for p in system.get("parts") or [])})
    for index, item in enumerate(contents):
        role = item.get("role", "user")
        if role not in ("user", "model"):
            raise InvalidRequest(f"Please use a valid role: user, model. (contents[{index}].role: {role!r})")
        parts = item.get("parts")
        if not parts:
            raise InvalidRequest(f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.")
        texts: list[str] = []
        first_call = True
        for part in parts:
            if "text" in part:
                texts.append(part["text"])
            elif "inlineData" in part:
                inline = part["inlineData"]
                if not inline.get("mimeType") or not inline.get("data"):
                    raise InvalidRequest("inlineData needs mimeType and data.")
            elif "fileData" in part:
                if not (part["fileData"] or {}).get("fileUri"):
                    raise InvalidRequest("fileData needs fileUri.")
            elif "functionCall" in part:
                if role != "model":
                    raise InvalidRequest("functionCall parts belong to the model role.")
                if first_call and model.startswith("gemini-3") and not part.get("thoughtSignature"):
                    raise InvalidRequest(
                        f"Function call is missing a thought_signature in functionCall parts. "
                        f"This is required for tools to work correctly (contents[{index}])."
                    )
                first_call = False
                messages.append({"role": "assistant", "content": None, "tool_calls": [{
                    "type": "function",
                    "function": {"name": part["functionCall"].get("name"),
                                 "arguments": json.dumps(part["functionCall"].get("args") or {})},
                }]})
            elif "functionResponse" in part:
                response = part["functionResponse"]
                if declared and response.get("name") not in declared:
                    raise InvalidRequest(f"functionResponse.name {response.get('name')!r} is not a declared function.")
                messages.append({"role": "tool", "content": json.dumps(response.get("response"))})
            else:
                raise InvalidRequest(f"Unknown part in contents[{index}]: {sorted(part)}")
        if texts:
            messages.append({"role": "user" if role == "user" else "assistant", "content": "".join(texts)})
    return messages


# --- answers ---------------------------------------------------------------------------------------


def _usage(prompt_tokens: int, candidate_tokens: int) -> dict:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidate_tokens,
        "totalTokenCount": prompt_tokens + candidate_tokens,
    }


def _response(model: str, response_id: str, parts: list[dict] | None, finish: str | None, usage: dict | None) -> dict:
    candidate: dict[str, Any] = {"index": 0}
    if parts is not None:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": response_id}
    if usage:
        body["usageMetadata"] = usage
    return body


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\r\n\r\n".encode()


def routes(engine: Engine) -> list[Route]:
    async def call(request: Request) -> Response:
        model, _, method = request.path_params["call"].partition(":")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        key = _key(request)
        if method in ("generateContent", "streamGenerateContent"):
            return await generate(request, body, key, model, stream=method == "streamGenerateContent")
        if method in ("embedContent", "batchEmbedContents"):
            return await embed(request, body, key, model, batch=method == "batchEmbedContents")
        engine.record(request, provider=provider_of(request), key=key, model=model, body=body)
        return google_error(404, f"Method not found: {method}")

    async def generate(request: Request, body: Any, key: str | None, model: str, *, stream: bool) -> Response:
        provider = provider_of(request)
        if not isinstance(body, dict):
            engine.record(request, provider=provider, key=key, model=model, body=None, stream=stream)
            return google_error(400, "Invalid JSON payload received.")
        try:
            declarations = _declarations(body)
            messages = _openai_messages(body, model, {d["name"] for d in declarations})
        except InvalidRequest as exc:
            engine.record(request, provider=provider, key=key, model=model, body=body, stream=stream)
            return google_error(400, str(exc))
        prompt_tokens = content.estimate_prompt_tokens(messages)
        decision = await engine.admit(request, provider=provider, key=key, model=model, body=body,
                                      est_tokens=prompt_tokens, stream=stream)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)

        response_id = uuid.uuid4().hex[:20]
        last_user = content.last_user_text(messages).lower()
        if "blocked prompt" in last_user:
            answer = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
                "modelVersion": model, "responseId": response_id}
            return _answer(decision, answer, stream)
        if "blocked answer" in last_user:
            answer = _response(model, response_id, None, "SAFETY", _usage(prompt_tokens, 0))
            answer["candidates"][0]["safetyRatings"] = [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]
            return _answer(decision, answer, stream)

        config = body.get("generationConfig") or {}
        json_mode = config.get("responseMimeType") == "application/json"
        tools = [{"type": "function", "function": d} for d in declarations]
        tool_choice = _tool_choice(body)
        if content.wants_tool(messages, tools, tool_choice):
            function = content.chosen_tool(tools, tool_choice)
            arguments = content.example_arguments(function.get("parameters"))
            part = {"functionCall": {"name": function["name"], "args": arguments}, "thoughtSignature": SIGNATURE}
            usage = _usage(prompt_tokens, content.estimate_tokens(json.dumps(arguments)))
            if not stream:
                return engine.json(decision, _response(model, response_id, [part], "STOP", usage))
            frames = [_response(model, response_id, [part], None, _usage(prompt_tokens, 0))]
            tail = [_response(model, response_id, [{"text": ""}], "STOP", usage)]
            return _stream(request, decision, frames, tail)

        text = content.reply_text(messages, json_mode=json_mode)
        max_tokens = config.get("maxOutputTokens")
        finish = "STOP"
        if max_tokens and content.estimate_tokens(text) > max_tokens:
            text, finish = text[: max_tokens * 4], "MAX_TOKENS"
        usage = _usage(prompt_tokens, content.estimate_tokens(text))
        if not stream:
            return engine.json(decision, _response(model, response_id, [{"text": text}], finish, usage))
        pieces = content.split_chunks(text)
        running = 0
        frames = []
        for piece in pieces[:-1]:
            running += content.estimate_tokens(piece)
            frames.append(_response(model, response_id, [{"text": piece}], None, _usage(prompt_tokens, running)))
        tail = [_response(model, response_id, [{"text": pieces[-1]}], finish, usage)]
        return _stream(request, decision, frames, tail)

    def _answer(decision: Decision, answer: dict, stream: bool) -> Response:
        if stream:
            return _stream(decision.request, decision, [], [answer])
        return engine.json(decision, answer)

    def _stream(request: Request, decision: Decision, frames: list[dict], tail: list[dict]) -> Response:
        # Without alt=sse Gemini answers the whole stream as one JSON array.
        if request.query_params.get("alt") != "sse":
            return engine.json(decision, [*frames, *tail])
        failure = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                             "status": "UNAVAILABLE"}}
        return engine.stream(decision, [_sse(f) for f in frames], [_sse(f) for f in tail],
                             error_frames=[_sse(failure)])

    async def embed(request: Request, body: Any, key: str | None, model: str, *, batch: bool) -> Response:
        provider = provider_of(request)
        if not isinstance(body, dict):
            engine.record(request, provider=provider, key=key, model=model, body=None)
            return google_error(400, "Invalid JSON payload received.")
        items = body.get("requests") if batch else [body]
        problem = None
        if not isinstance(items, list) or not items:
            problem = "* BatchEmbedContentsRequest.requests: requests is not specified"
        else:
            for index, item in enumerate(items):
                if item.get("model", f"models/{model}") != f"models/{model}":
                    problem = (f"Model names should match: requests[{index}].model is {item.get('model')!r}, "
                               f"the batch is for models/{model}.")
                elif not ((item.get("content") or {}).get("parts")):
                    problem = f"* EmbedContentRequest.content: content is not specified (requests[{index}])"
        if problem:
            engine.record(request, provider=provider, key=key, model=model, body=body)
            return google_error(400, problem)
        texts = [" ".join(p.get("text", "") for p in item["content"]["parts"]) for item in items]
        decision = await engine.admit(request, provider=provider, key=key, model=model, body=body,
                                      est_tokens=sum(content.estimate_tokens(t) for t in texts))
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        vectors = [
            {"values": content.embedding_vector(
                text, int(item.get("outputDimensionality") or content.DEFAULT_EMBEDDING_DIMENSIONS))}
            for text, item in zip(texts, items, strict=True)
        ]
        answer = {"embeddings": vectors} if batch else {"embedding": vectors[0]}
        return engine.json(decision, answer)

    return [Route("/{prefix:path}/models/{call}", call, methods=["POST"])]
