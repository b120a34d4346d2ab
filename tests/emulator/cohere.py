"""Cohere API v2 wire format: ``POST /<provider>/<prefix>/chat`` and ``/embed`` (base_url ``.../cohere/v2``).

Chat answers ``{"id", "finish_reason", "message": {"role", "content": [{"type": "text", "text"}],
"tool_plan", "tool_calls"}, "usage": {"billed_units", "tokens"}}``; with ``stream: true`` it sends SSE
events ``message-start``, ``content-start``, ``content-delta``..., ``content-end`` (or ``tool-plan-delta``,
``tool-call-start``, ``tool-call-delta``..., ``tool-call-end``) and ``message-end`` with the finish reason
and usage. ``usage.tokens.input_tokens`` includes a 100-token prompt template on top of the billed count,
as Cohere's does.

Requests are checked strictly, like Cohere's v2 decoder: OpenAI-only fields (``top_p``, ``stop``, ``n``,
``max_completion_tokens``, ``stream_options``, ...) are "unknown field" 400s, a tool message must answer
an earlier tool call id, ``tool_choice`` must be ``REQUIRED`` or ``NONE``, embed needs ``input_type``.
Errors are ``{"id", "message"}`` with the status; 429 keeps ``Retry-After``. ``midfail=N`` ends the stream
with ``message-end`` whose ``finish_reason`` is ``ERROR``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import content
from .behaviour import ERROR, GONE, Decision, Engine
from .openai import bearer_key, provider_of

TEMPLATE_TOKENS = 100
CHAT_FIELDS = {
    "model", "messages", "stream", "tools", "documents", "citation_options", "response_format", "safety_mode",
    "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty", "presence_penalty", "k", "p",
    "logprobs", "tool_choice", "strict_tools", "thinking", "priority",
}
EMBED_FIELDS = {"model", "texts", "images", "inputs", "input_type", "embedding_types", "output_dimension",
                "max_tokens", "truncate", "priority"}


class InvalidRequest(Exception):
    pass


def cohere_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"id": str(uuid.uuid4()), "message": message}, status_code=status, headers=headers)


def error_response(decision: Decision, model: str | None) -> Response:
    error = decision.error
    if decision.action == GONE or error is None:
        return Response(status_code=499)
    headers = decision.headers
    if decision.spec is None:
        return cohere_error(401, "no api key supplied", headers)
    status = error.status
    if status == 401:
        return cohere_error(401, "invalid api token", headers)
    if status == 403:
        return cohere_error(403, "Forbidden: this key cannot use this model", headers)
    if status == 404:
        return cohere_error(404, f"model '{model}' not found, make sure the correct model ID was used and that "
                                 "you have access to the model.", headers)
    if status == 429:
        return cohere_error(429, "You are using a Trial key, which is limited to 20 API calls / minute. You can "
                                 "continue to use the Trial key for free or upgrade to a Production key with "
                                 "higher rate limits at 'https://dashboard.cohere.com/api-keys'.", headers)
    if status == 400 and error.code == "context_length_exceeded":
        limit = decision.spec.ctx or 0
        return cohere_error(400, f"too many tokens: total number of tokens in the prompt cannot exceed {limit}. "
                                 "Try using a shorter prompt, or enabling prompt truncating.", headers)
    if status >= 500:
        return cohere_error(status, "internal server error, this has been reported to our developers", headers)
    return cohere_error(status, error.message, headers)


def _check_fields(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"invalid request: unknown field `{unknown[0]}`")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("invalid request: messages must not be empty")
    call_ids: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"invalid request: messages[{index}].role must be one of system, user, assistant, tool")
        if role == "assistant":
            if not message.get("content") and not message.get("tool_calls") and not message.get("tool_plan"):
                raise InvalidRequest(f"invalid request: messages[{index}] needs content or tool_calls")
            for call in message.get("tool_calls") or []:
                if not call.get("id") or not isinstance((call.get("function") or {}).get("arguments"), str):
                    raise InvalidRequest(f"invalid request: messages[{index}].tool_calls need an id and string arguments")
                call_ids.add(call["id"])
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            raise InvalidRequest(f"invalid request: messages[{index}].tool_call_id does not match any tool call")


def _tool_choice(body: dict) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if choice not in ("REQUIRED", "NONE"):
        raise InvalidRequest("invalid request: tool_choice must be one of REQUIRED, NONE")
    return choice.lower()


def _usage(prompt_tokens: int, output_tokens: int) -> dict:
    return {
        "billed_units": {"input_tokens": prompt_tokens, "output_tokens": output_tokens},
        "tokens": {"input_tokens": prompt_tokens + TEMPLATE_TOKENS, "output_tokens": output_tokens},
    }


def _event(payload: dict) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def routes(engine: Engine) -> list[Route]:
    async def chat(request: Request) -> Response:
        provider, key = provider_of(request), bearer_key(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            engine.record(request, provider=provider, key=key, model=None, body=None)
            return cohere_error(400, "invalid request: could not parse the request body as JSON")
        model = body.get("model")
        messages = body.get("messages")
        stream = bool(body.get("stream"))
        try:
            _check_fields(body, CHAT_FIELDS)
            _check_messages(messages)
            tool_choice = _tool_choice(body)
        except InvalidRequest as exc:
            engine.record(request, provider=provider, key=key, model=model, body=body, stream=stream)
            return cohere_error(400, str(exc))
        prompt_tokens = content.estimate_prompt_tokens(messages)
        decision = await engine.admit(request, provider=provider, key=key, model=model, body=body,
                                      est_tokens=prompt_tokens, stream=stream)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)

        message_id = str(uuid.uuid4())
        tools = body.get("tools")
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        if content.wants_tool(messages, tools, tool_choice):
            function = content.chosen_tool(tools, tool_choice)
            arguments = json.dumps(content.example_arguments(function.get("parameters")))
            call = {"id": f"{function['name']}_emu0", "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}}
            plan = f"I will call {function['name']}."
            usage = _usage(prompt_tokens, content.estimate_tokens(plan + arguments))
            if not stream:
                answer = {"id": message_id, "finish_reason": "TOOL_CALL", "usage": usage,
                          "message": {"role": "assistant", "tool_plan": plan, "tool_calls": [call]}}
                return engine.json(decision, answer)
            frames = [
                _event({"id": message_id, "type": "message-start", "delta": {"message": {
                    "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
                _event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": plan}}}),
                _event({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                    "id": call["id"], "type": "function", "function": {"name": function["name"], "arguments": ""}}}}}),
            ]
            frames += [
                _event({"type": "tool-call-delta", "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})
                for piece in content.split_chunks(arguments)
            ]
            tail = [
                _event({"type": "tool-call-end", "index": 0}),
                _event({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": usage}}),
            ]
            return engine.stream(decision, frames, tail, error_frames=[_failure()])

        text = content.reply_text(messages, json_mode=json_mode)
        finish = "COMPLETE"
        if body.get("max_tokens") and content.estimate_tokens(text) > body["max_tokens"]:
            text, finish = text[: body["max_tokens"] * 4], "MAX_TOKENS"
        usage = _usage(prompt_tokens, content.estimate_tokens(text))
        if not stream:
            answer = {"id": message_id, "finish_reason": finish, "usage": usage,
                      "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}
            return engine.json(decision, answer)
        frames = [
            _event({"id": message_id, "type": "message-start", "delta": {"message": {
                "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
            _event({"type": "content-start", "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
        ]
        frames += [
            _event({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}})
            for piece in content.split_chunks(text)
        ]
        tail = [
            _event({"type": "content-end", "index": 0}),
            _event({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
        ]
        return engine.stream(decision, frames, tail, error_frames=[_failure()])

    async def embed(request: Request) -> Response:
        provider, key = provider_of(request), bearer_key(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            engine.record(request, provider=provider, key=key, model=None, body=None)
            return cohere_error(400, "invalid request: could not parse the request body as JSON")
        model = body.get("model")
        texts = body.get("texts")
        try:
            _check_fields(body, EMBED_FIELDS)
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise InvalidRequest("invalid request: texts must be a non-empty list of strings")
            if body.get("input_type") not in ("search_document", "search_query", "classification", "clustering"):
                raise InvalidRequest("invalid request: input_type is required for embed models v3 and higher.")
        except InvalidRequest as exc:
            engine.record(request, provider=provider, key=key, model=model, body=body)
            return cohere_error(400, str(exc))
        prompt_tokens = sum(content.estimate_tokens(text) for text in texts)
        decision = await engine.admit(request, provider=provider, key=key, model=model, body=body,
                                      est_tokens=prompt_tokens)
        if decision.action in (ERROR, GONE):
            return error_response(decision, model)
        dimensions = int(body.get("output_dimension") or content.DEFAULT_EMBEDDING_DIMENSIONS)
        vectors = [content.embedding_vector(text, dimensions) for text in texts]
        types = body.get("embedding_types") or ["float"]
        answer = {
            "id": str(uuid.uuid4()),
            "texts": texts,
            "embeddings": {kind: vectors for kind in types if kind == "float"},
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": prompt_tokens}},
            "response_type": "embeddings_by_type",
        }
        return engine.json(decision, answer)

    return [
        Route("/{prefix:path}/chat", chat, methods=["POST"]),
        Route("/{prefix:path}/embed", embed, methods=["POST"]),
    ]


def _failure() -> bytes:
    return _event({"type": "message-end", "delta": {"finish_reason": "ERROR", "usage": _usage(0, 0)}})
