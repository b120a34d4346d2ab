"""OpenAI Responses: POST /v1/responses, GET and DELETE /v1/responses/{id}, over the one chat exchange.

The dialect is translators (no I/O) and three thin views:

    history = stored input + output items of previous_response_id's conversation (oldest first)
    chat_body = chat_request(body, history=history)          # GatewayError(400) for what we cannot serve
    response = response_object(completion, request=body, response_id=..., created_at=..., model=...)
    encoder = ResponsesEncoder(response_skeleton(body, response_id=..., created_at=..., model=...))

Stored responses (``store``, true by default as with OpenAI) live in routing.stored_responses, scoped to
the API key's user. Errors go out in OpenAI's shape (the default dialect renderer).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Router
from pydantic import Field, StrictBool

from routing.errors import GatewayError
from routing.stored_responses import (
    conversation_history,
    stored_response_delete,
    stored_response_get,
    stored_response_save,
)

from . import exchange
from .dialects import Dialect, register_dialect

log = logging.getLogger(__name__)

router = Router(tags=["responses"])
register_dialect(Dialect.RESPONSES, path_prefixes=("/v1/responses",))


class CreateResponseRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    # Checked by input_items, which says what an item must be (a union type would answer "input.str: ...").
    input: Any = None
    instructions: str | None = None
    stream: StrictBool | None = False
    store: StrictBool | None = True
    previous_response_id: str | None = Field(None, min_length=1)
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    parallel_tool_calls: StrictBool | None = None


@router.post("/responses", summary="Create a model response (Responses API; streaming or not)")
async def create_response(request: HttpRequest, payload: CreateResponseRequest):
    body = payload.to_upstream()
    user_id = request.auth.user_id
    history: list[dict[str, Any]] = []
    ancestry: list[str] = []
    if body.get("previous_response_id"):
        history, ancestry = await conversation_history(previous_response_id=body["previous_response_id"],
                                                       user_id=user_id)
    chat_body = chat_request(body, history=history)
    stream = bool(body.get("stream"))
    response_id, created_at = new_id("resp"), int(time.time())
    # Codex sends its conversation id as prompt_cache_key: the natural sticky-session key when no user is set.
    session_user = body.get("prompt_cache_key") if isinstance(body.get("prompt_cache_key"), str) else None
    result = await exchange.chat(request, chat_body, dialect=Dialect.RESPONSES, stream=stream,
                                 session_user=session_user)
    model = result.served.model.model_id

    async def save(response: dict[str, Any]) -> None:
        if body.get("store") is False or response["status"] not in ("completed", "incomplete"):
            return
        try:
            await stored_response_save(response=response, user_id=user_id, input_items=input_items(body),
                                       ancestry=ancestry)
        except Exception:
            # The answer is worth more than its copy: the client gets it, the operator the traceback.
            log.exception("could not store response %s", response["id"])

    if not stream:
        response = response_object(result.completion, request=body, response_id=response_id,
                                   created_at=created_at, model=model)
        await save(response)
        return exchange.with_trail(JsonResponse(response), result)
    encoder = ResponsesEncoder(response_skeleton(body, response_id=response_id, created_at=created_at, model=model),
                               custom_tools=custom_tool_names(body))
    http = exchange.stream_response(request, result, encoder)
    http.streaming_content = _saved_before_the_end(http.streaming_content, encoder, save)
    return http


async def _saved_before_the_end(content: AsyncIterator[bytes], encoder: ResponsesEncoder, save) -> AsyncIterator[bytes]:
    """The stream, with the finished response stored before its last event goes out: a client that
    continues from it (previous_response_id) right after response.completed finds it."""
    saved = False
    # Closed with this wrapper, so that a client who leaves ends the relay (and the upstream call) at once.
    async with aclosing(content):
        async for piece in content:
            if encoder.final is not None and not saved:
                saved = True
                await save(encoder.final)
            yield piece


@router.get("/responses/{response_id}", summary="Retrieve a stored model response")
async def retrieve_response(request: HttpRequest, response_id: str):
    record = await stored_response_get(response_id=response_id, user_id=request.auth.user_id)
    return JsonResponse(record.response)


@router.delete("/responses/{response_id}", summary="Delete a stored model response")
async def delete_response(request: HttpRequest, response_id: str):
    await stored_response_delete(response_id=response_id, user_id=request.auth.user_id)
    return JsonResponse({"id": response_id, "object": "response", "deleted": True})


# Request fields copied onto the Response object as OpenAI echoes them (with OpenAI's defaults).
_ECHOED = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": None,
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "user": None,
}

# Request fields that ask for something a chat upstream cannot do: a clear 400 rather than silence.
_UNSUPPORTED_FIELDS = {
    "background": "background responses are not supported; send the request and wait for it (or stream)",
    "conversation": "conversations are not supported; continue with previous_response_id instead",
    "prompt": "prompt templates are not supported; send the instructions and input themselves",
}

_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


# --- request: Responses -> chat ---------------------------------------------------------------------


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message), as stored for later turns."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise bad_request("input must be a string or a list of input items", "input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request(f"input[{i}] must be an object (an input item)", f"input.{i}")
    return value


def chat_request(body: dict[str, Any], *, history: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The internal chat-completions body for a Responses request.

    history: the items of the conversation before this request (previous_response_id's stored input and
    output, oldest first); they go before this request's input. Instructions are this request's only, as
    OpenAI does: a continued response does not inherit the previous one's instructions.
    """
    for name, why in _UNSUPPORTED_FIELDS.items():
        if body.get(name):
            raise bad_request(f"{name}: {why}", name, code="unsupported_parameter")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("instructions must be a string", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    _append_items(messages, list(history), "previous_response_id")
    _append_items(messages, input_items(body), "input")
    if not any(m["role"] != "system" for m in messages):
        raise bad_request("input is required: send a string or at least one input item", "input")

    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    tools = _tools(body.get("tools"))
    tool_choice = None
    if body.get("tool_choice") is not None:
        tools, tool_choice = _tool_choice(body["tool_choice"], tools)
    if tools:
        # tool_choice and parallel_tool_calls only with tools: several upstreams refuse them alone.
        chat["tools"] = tools
        if tool_choice is not None:
            chat["tool_choice"] = tool_choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = bool(body["parallel_tool_calls"])
    response_format = _response_format(_object(body, "text").get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    effort = _object(body, "reasoning").get("effort")
    if effort:
        # Sent as chat's reasoning_effort; a provider that refuses it lists it in its drop_params.
        chat["reasoning_effort"] = effort
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    return chat


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise bad_request(f"{name} must be an object", name)
    return value or {}


def _append_items(messages: list[dict[str, Any]], items: list[dict[str, Any]], where: str) -> None:
    for i, item in enumerate(items):
        param = f"{where}.{i}"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, param))
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (item.get("arguments") or "{}" if kind == "function_call"
                         else json.dumps({CUSTOM_INPUT: str(item.get("input") or "")}))
            call = {
                "id": _required_str(item, "call_id", param),
                "type": "function",
                "function": {"name": _required_str(item, "name", param), "arguments": arguments},
            }
            last = messages[-1] if messages else None
            # Parallel calls (and a call after the answer's own text) belong to one assistant turn.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({
                "role": "tool",
                "tool_call_id": _required_str(item, "call_id", param),
                "content": _tool_output(item.get("output"), f"{param}.output"),
            })
        elif kind == "reasoning":
            # A previous turn's reasoning (often encrypted for OpenAI's own models): no chat upstream
            # accepts it back, and the answer it led to is in the history anyway.
            continue
        elif kind == "item_reference":
            raise bad_request(f"{param}: item_reference is not supported; send the item itself, or continue "
                              "with previous_response_id", param, code="unsupported_value")
        else:
            raise bad_request(f"{param}: input items of type '{kind}' are not supported; freellm accepts "
                              "message, function_call, function_call_output, custom_tool_call, "
                              "custom_tool_call_output and reasoning items",
                              f"{param}.type", code="unsupported_value")


def _required_str(item: dict[str, Any], name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{param}.{name} is required", f"{param}.{name}")
    return value


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad_request(f"{param}.role must be one of user, assistant, system, developer", f"{param}.role")
    # Free upstreams know "system" far more widely than "developer"; they mean the same here.
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise bad_request(f"{param}.content must be a string or a list of content parts", f"{param}.content")
    parts = [_content_part(part, f"{param}.content.{j}") for j, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        # Plain text as a string: what every upstream (and assistant/system turns everywhere) accepts.
        return {"role": chat_role, "content": "\n".join(part["text"] for part in parts)}
    if chat_role != "user":
        raise bad_request(f"{param}: images are only supported in user messages", f"{param}.content")
    return {"role": chat_role, "content": parts}


def _content_part(part: Any, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise bad_request(f"{param} must be an object (a content part)", param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad_request(f"{param}: input_image needs image_url (a URL or a data: URL); file_id is not "
                              "supported", f"{param}.image_url", code="unsupported_value")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise bad_request(f"{param}: content parts of type '{kind}' are not supported; freellm accepts input_text, "
                      "input_image (by URL) and output_text", f"{param}.type", code="unsupported_value")


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{param}.{j}: function_call_output parts of type '{kind}' are not supported "
                                  "(chat tool results are text)", f"{param}.{j}", code="unsupported_value")
            texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    raise bad_request(f"{param} must be a string or a list of input_text parts", param)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools must be a list", "tools")
    chat_tools = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "custom":
            chat_tools.append({"type": "function", "function": _custom_as_function(tool, f"tools.{i}")})
            continue
        if kind != "function":
            raise bad_request(
                f"tools[{i}]: the tool type '{kind}' is not supported: it is a tool that OpenAI runs on its own "
                "servers, and freellm's upstreams have no such tool. Only function and custom tools are "
                "supported; run the tool yourself and declare it as a function.",
                f"tools.{i}.type", code="unsupported_tool_type",
            )
        function = {"name": _required_str(tool, "name", f"tools.{i}")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        if tool.get("strict") is not None:
            function["strict"] = bool(tool["strict"])
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


# A custom (free-form) tool goes upstream as a function of one string argument under this name.
CUSTOM_INPUT = "input"


def _custom_as_function(tool: dict[str, Any], param: str) -> dict[str, Any]:
    """Chat upstreams know only JSON-argument functions: a custom tool becomes one whose single string argument
    is the free-form input, its grammar (Codex's apply_patch has one) spelled out for the model to follow."""
    description = str(tool.get("description") or "")
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar" and fmt.get("definition"):
        description += (f"\n\nThe `{CUSTOM_INPUT}` argument is the tool's raw input and must follow this "
                        f"{fmt.get('syntax') or 'lark'} grammar:\n{fmt['definition']}")
    return {
        "name": _required_str(tool, "name", param),
        "description": description.strip(),
        "parameters": {"type": "object", "properties": {CUSTOM_INPUT: {
            "type": "string", "description": "The tool's raw input, as free text (not JSON)"}},
            "required": [CUSTOM_INPUT]},
    }


def custom_tool_names(request: dict[str, Any]) -> frozenset[str]:
    """The request's custom tools: their calls go back as custom_tool_call items."""
    tools = request.get("tools") if isinstance(request.get("tools"), list) else ()
    return frozenset(t.get("name") for t in tools if isinstance(t, dict) and t.get("type") == "custom")


def custom_input(arguments: str) -> str:
    """The free-form input of a custom tool's call from its function arguments (as they came if not ours)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value[CUSTOM_INPUT] if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str) else arguments


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
    """(tools, chat tool_choice): allowed_tools narrows the tools to the listed functions."""
    if choice in ("none", "auto", "required"):
        return tools, choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        return tools, {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and isinstance(choice.get("tools"), list):
        names = {t.get("name") for t in choice["tools"]
                 if isinstance(t, dict) and t.get("type") in ("function", "custom")}
        narrowed = [tool for tool in tools if tool["function"]["name"] in names]
        mode = choice.get("mode") if choice.get("mode") in ("auto", "required") else "auto"
        return narrowed, mode
    raise bad_request(f"tool_choice: '{kind or choice}' is not supported; use none, auto, required, a function "
                      "({type: function, name}) or allowed_tools over function tools", "tool_choice",
                      code="unsupported_value")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise bad_request("text.format.schema is required for json_schema", "text.format.schema")
        schema = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request(f"text.format.type must be text, json_object or json_schema, not '{kind}'",
                      "text.format.type")


# --- answer: chat.completion -> Response ------------------------------------------------------------


def response_skeleton(request: dict[str, Any], *, response_id: str, created_at: float | None = None,
                      model: str | None = None) -> dict[str, Any]:
    """The Response object before any output: what stream events carry until the end."""
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at if created_at is not None else time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "model": model or request.get("model"),
        "output": [],
        "usage": None,
    }
    for name, default in _ECHOED.items():
        value = request.get(name)
        response[name] = default if value is None else value
    if response["reasoning"] is None:
        response["reasoning"] = {"effort": None, "summary": None}
    return response


def response_object(completion: dict[str, Any], *, request: dict[str, Any], response_id: str,
                    created_at: float | None = None, model: str | None = None) -> dict[str, Any]:
    """The Response for a finished ``chat.completion`` (model: who answered; else the completion's own)."""
    response = response_skeleton(request, response_id=response_id, created_at=created_at,
                                 model=model or completion.get("model") or None)
    choice = (completion.get("choices") or [{}])[0]
    response["output"] = output_items(choice.get("message") or {}, custom_tools=custom_tool_names(request))
    _finish(response, choice.get("finish_reason"), completion.get("usage"))
    return response


def output_items(message: dict[str, Any], *, custom_tools: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """A chat message as Responses output items: reasoning, then the message, then one item per tool call
    (custom_tool_call for the request's custom tools)."""
    items: list[dict[str, Any]] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        items.append(_reasoning_item(new_id("rs"), reasoning))
    parts = []
    text = _text_of(message.get("content"))
    if text:
        parts.append(_text_part(text))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        items.append(_message_item(new_id("msg"), parts, "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        call_id = call.get("id") or new_id("call")
        if name in custom_tools:
            items.append(_custom_call_item(new_id("ctc"), call_id, name, custom_input(arguments)))
        else:
            items.append(_function_call_item(new_id("fc"), call_id, name, arguments, "completed"))
    return items


def usage_object(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _finish(response: dict[str, Any], finish_reason: str | None, usage: dict[str, Any] | None) -> None:
    incomplete = _FINISH_INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if incomplete else "completed"
    response["incomplete_details"] = {"reason": incomplete} if incomplete else None
    response["usage"] = usage_object(usage)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def _function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _custom_call_item(item_id: str, call_id: str, name: str, tool_input: str) -> dict[str, Any]:
    return {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": tool_input}


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": []}
    if text is not None:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    return item


# --- stream: chat.completion.chunk -> Responses events -----------------------------------------------


class _OpenItem:
    """An output item being streamed: its index, id, and the fragments of its text so far."""

    def __init__(self, kind: str, index: int, item_id: str, **fields: Any) -> None:
        self.kind = kind  # "message", "reasoning", "function_call" or "custom_tool_call"
        self.index = index
        self.id = item_id
        self.fields = fields
        self.fragments: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.fragments)


class ResponsesEncoder:
    """exchange.StreamEncoder for Responses: named SSE events, each with its sequence_number, in the order
    OpenAI sends them. ``final`` is the finished Response object (None until finish or fail)."""

    # OpenAI sends nothing while a model thinks, and Codex waits minutes: no keepalive timer.
    keepalive_seconds = None

    def __init__(self, skeleton: dict[str, Any], *, custom_tools: frozenset[str] = frozenset()) -> None:
        self.response = skeleton
        self.custom_tools = custom_tools
        self.final: dict[str, Any] | None = None
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # finished output items, by output index
        self._text: _OpenItem | None = None  # the open message or reasoning item
        self._calls: dict[int, _OpenItem] = {}  # open function calls by the chunk's tool-call index
        self._next_index = 0
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    # The protocol ---------------------------------------------------------------------------------

    def start(self) -> bytes:
        snapshot = dict(self.response)
        return self._event("response.created", response=snapshot) + self._event("response.in_progress",
                                                                                  response=snapshot)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self._usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or ():
            if (choice.get("index") or 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out.append(self._text_delta("reasoning", reasoning))
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(self._text_delta("message", delta["content"]))
            for call in delta.get("tool_calls") or ():
                out.append(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return b"".join(out)

    def finish(self, usage: Any) -> bytes:
        out = self._close_all()
        reported = self._usage or {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        response = self._snapshot()
        _finish(response, self._finish_reason, reported)
        self.final = response
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=response)

    def fail(self, error: GatewayError) -> bytes:
        # No item is closed as done: what was sent so far stays incomplete, as with OpenAI's own failures.
        response = self._snapshot(open_status="incomplete")
        response["status"] = "failed"
        response["error"] = {"code": "server_error", "message": error.message}
        self.final = response
        return self._event("response.failed", response=response)

    def keepalive(self) -> bytes:
        # An SSE comment: clients (the SDKs, Codex) skip it, proxies see bytes.
        return b": keepalive\n\n"

    # Events ----------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return exchange.sse_event(kind, payload)

    def _open(self, kind: str, item_id: str, **fields: Any) -> _OpenItem:
        item = _OpenItem(kind, self._next_index, item_id, **fields)
        self._next_index += 1
        self._items.append({})  # its place in the output, filled when done
        return item

    def _text_delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self._text is not None and self._text.kind != kind:
            out += self._close_text()
        if self._text is None:
            # Text after a function call starts a new item: the calls before it stay open until the end.
            item = self._text = self._open(kind, new_id("msg" if kind == "message" else "rs"))
            if kind == "message":
                out += self._event("response.output_item.added", output_index=item.index,
                                   item=_message_item(item.id, [], "in_progress"))
                out += self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                   content_index=0, part=_text_part(""))
            else:
                out += self._event("response.output_item.added", output_index=item.index,
                                   item=_reasoning_item(item.id, None))
                out += self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                   content_index=0, part={"type": "reasoning_text", "text": ""})
        item = self._text
        item.fragments.append(text)
        kind_event = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        return out + self._event(kind_event, item_id=item.id, output_index=item.index, content_index=0,
                                 delta=text, **extra)

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index") or 0
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            if self._text is not None:
                out += self._close_text()
            name = function.get("name") or ""
            call_id = call.get("id") or new_id("call")
            if name in self.custom_tools:
                item = self._calls[index] = self._open("custom_tool_call", new_id("ctc"), call_id=call_id, name=name)
                added = _custom_call_item(item.id, call_id, name, "")
            else:
                item = self._calls[index] = self._open("function_call", new_id("fc"), call_id=call_id, name=name)
                added = _function_call_item(item.id, call_id, name, "", "in_progress")
            out += self._event("response.output_item.added", output_index=item.index, item=added)
        elif function.get("name") and not item.fields["name"]:
            item.fields["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.fragments.append(arguments)
            # A custom tool's input is inside a JSON string until the call ends: it goes out whole then.
            if item.kind == "function_call":
                out += self._event("response.function_call_arguments.delta", item_id=item.id,
                                   output_index=item.index, delta=arguments)
        return out

    def _close_text(self) -> bytes:
        item, self._text = self._text, None
        assert item is not None
        text = item.text
        if item.kind == "message":
            part = _text_part(text)
            out = self._event("response.output_text.done", item_id=item.id, output_index=item.index,
                              content_index=0, text=text, logprobs=[])
            done = _message_item(item.id, [part], "completed")
        else:
            part = {"type": "reasoning_text", "text": text}
            out = self._event("response.reasoning_text.done", item_id=item.id, output_index=item.index,
                              content_index=0, text=text)
            done = _reasoning_item(item.id, text)
        out += self._event("response.content_part.done", item_id=item.id, output_index=item.index,
                           content_index=0, part=part)
        self._items[item.index] = done
        return out + self._event("response.output_item.done", output_index=item.index, item=done)

    def _close_call(self, item: _OpenItem) -> bytes:
        arguments = item.text
        if item.kind == "custom_tool_call":
            tool_input = custom_input(arguments)
            done = _custom_call_item(item.id, item.fields["call_id"], item.fields["name"], tool_input)
            self._items[item.index] = done
            out = self._event("response.custom_tool_call_input.delta", item_id=item.id, output_index=item.index,
                              delta=tool_input) if tool_input else b""
            out += self._event("response.custom_tool_call_input.done", item_id=item.id, output_index=item.index,
                               input=tool_input)
            return out + self._event("response.output_item.done", output_index=item.index, item=done)
        done = _function_call_item(item.id, item.fields["call_id"], item.fields["name"], arguments, "completed")
        self._items[item.index] = done
        out = self._event("response.function_call_arguments.done", item_id=item.id, output_index=item.index,
                          name=item.fields["name"], arguments=arguments)
        return out + self._event("response.output_item.done", output_index=item.index, item=done)

    def _close_all(self) -> bytes:
        out = self._close_text() if self._text is not None else b""
        for index in sorted(self._calls):
            out += self._close_call(self._calls[index])
        self._calls.clear()
        return out

    def _snapshot(self, open_status: str | None = None) -> dict[str, Any]:
        """The Response with the output so far; items still open are included as they stand."""
        response = dict(self.response)
        items = list(self._items)
        if open_status is not None:
            if self._text is not None:
                item = self._text
                items[item.index] = (_message_item(item.id, [_text_part(item.text)], open_status)
                                     if item.kind == "message" else _reasoning_item(item.id, item.text))
            for item in self._calls.values():
                items[item.index] = (
                    _custom_call_item(item.id, item.fields["call_id"], item.fields["name"], custom_input(item.text))
                    if item.kind == "custom_tool_call" else
                    _function_call_item(item.id, item.fields["call_id"], item.fields["name"], item.text, open_status))
        response["output"] = [item for item in items if item]
        return response
