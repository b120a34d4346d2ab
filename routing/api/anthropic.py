"""Anthropic Messages: POST /v1/messages and /v1/messages/count_tokens (Claude Code, the Anthropic SDKs),
translated to and from the internal request (an OpenAI chat-completions body); routing, failover, sessions
and the request log are the exchange's.

Pure functions and one stream encoder; the endpoints only parse, call the exchange and render:

    body, user = chat_body(payload)                 # Messages request → chat body (+ metadata.user_id)
    message = message_from_completion(completion, model=..., stop_sequences=...)   # chat.completion → Message
    AnthropicEncoder(...)                           # chat.completion.chunk dicts → Anthropic's SSE events
    error_body(status, message)                     # {"type": "error", "error": {"type", "message"}}

The wire format is Anthropic's (anthropic-sdk-python's types: Message, RawMessageStreamEvent, ErrorObject).
What has no equivalent upstream is refused with a clear 400 (server tools, PDFs, files) or dropped where
dropping cannot change the answer (cache_control, thinking blocks of earlier turns, citations settings).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router
from pydantic import Field, StrictBool

from providers.adapters.base import Usage
from routing import router as routing_router
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.tokens import estimate_request_tokens

from . import exchange
from .dialects import Dialect, register_dialect

router = Router(tags=["anthropic"])

# --- request: Messages → chat body ----------------------------------------------------------------

# Anthropic's effort levels beyond OpenAI's three take its highest.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# thinking.budget_tokens below these ceilings reads as low / medium effort; anything more is high.
_LOW_BUDGET = 4096
_MEDIUM_BUDGET = 16384


# Request fields whose work happens on Anthropic's side; no upstream of ours can do it.
_SERVER_SIDE_FIELDS = {"mcp_servers": "the MCP connector", "container": "a code-execution container"}


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(400, f"{param}: {message}", param=param, code="invalid_value")


def chat_body(payload: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The chat-completions body for a Messages request (fields already type-checked by the schema), and
    ``metadata.user_id``, the sticky-session user when the client sends one."""
    for name in _SERVER_SIDE_FIELDS:
        if payload.get(name):
            raise _invalid(f"{_SERVER_SIDE_FIELDS[name]} runs at Anthropic and is not supported by freellm", name)
    body: dict[str, Any] = {"model": payload["model"]}
    messages: list[dict[str, Any]] = []
    if (system := payload.get("system")) is not None:
        if text := _system_text(system):
            messages.append({"role": "system", "content": text})
    for i, message in enumerate(payload["messages"]):
        messages.extend(_chat_messages(message, f"messages.{i}"))
    body["messages"] = messages

    for name in ("max_tokens", "temperature", "top_p"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    if stops := payload.get("stop_sequences"):
        body["stop"] = list(stops)
    if tools := payload.get("tools"):
        body["tools"] = [_chat_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    if (choice := payload.get("tool_choice")) is not None:
        body.update(_chat_tool_choice(choice))
    if effort := _reasoning_effort(payload):
        body["reasoning_effort"] = effort
    if fmt := _response_format(payload.get("output_config")):
        body["response_format"] = fmt

    metadata = payload.get("metadata") or {}
    user = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return body, user if isinstance(user, str) and user.strip() else None


def _system_text(system: Any) -> str:
    """``system`` as one string: Claude Code sends several text blocks (each maybe with cache_control), and
    not every upstream takes content parts in a system message."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid("must be a string or a list of text blocks", "system")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid("system blocks must be text blocks", f"system.{i}")
        texts.append(block["text"])
    return "\n\n".join(text for text in texts if text)


def _chat_messages(message: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: a user turn with tool results becomes the tool messages
    (first, as OpenAI requires them right after the assistant's calls) and then a user message with the rest."""
    if not isinstance(message, Mapping):
        raise _invalid("must be an object with role and content", where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _invalid("role must be 'user' or 'assistant'", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid("must be a string or a list of content blocks", f"{where}.content")
    blocks = []
    for j, block in enumerate(content):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise _invalid("each content block needs a type", f"{where}.content.{j}")
        blocks.append((block, f"{where}.content.{j}"))
    return _assistant_messages(blocks) if role == "assistant" else _user_messages(blocks)


def _user_messages(blocks: list[tuple[Mapping[str, Any], str]]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "tool_result":
            tool_message, images = _tool_message(block, where)
            tool_messages.append(tool_message)
            parts.extend(images)
        else:
            parts.extend(_user_parts(block, where))
    messages = list(tool_messages)
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        # Plain text stays a plain string: the form every upstream takes.
        content: Any = "\n\n".join(part["text"] for part in parts) if only_text else parts
        messages.append({"role": "user", "content": content})
    elif not tool_messages:
        messages.append({"role": "user", "content": ""})
    return messages


def _user_parts(block: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid("a text block needs text", f"{where}.text")
        return [{"type": "text", "text": block["text"]}]
    if kind == "image":
        return [_image_part(block.get("source"), f"{where}.source")]
    if kind == "document":
        return [{"type": "text", "text": _document_text(block, where)}]
    if kind in ("thinking", "redacted_thinking"):
        return []
    if kind == "search_result":
        texts = [b.get("text", "") for b in block.get("content") or () if isinstance(b, Mapping)]
        title = block.get("title") or ""
        return [{"type": "text", "text": "\n".join(t for t in (title, *texts) if t)}]
    if kind == "tool_use":
        raise _invalid("tool_use blocks belong in assistant messages", f"{where}.type")
    raise _invalid(f"content blocks of type '{kind}' are not supported by freellm", f"{where}.type")


def _image_part(source: Any, where: str) -> dict[str, Any]:
    if not isinstance(source, Mapping):
        raise _invalid("an image block needs a source", where)
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise _invalid("a base64 image source needs media_type and data", where)
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _invalid("a url image source needs a url", where)
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _invalid(
        f"image sources of type '{kind}' are not supported (the Files API is not); send base64 or url", where
    )


def _document_text(block: Mapping[str, Any], where: str) -> str:
    """Text documents are read as text; PDFs have no upstream equivalent across providers."""
    source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        text = source["data"]
    elif kind == "content" and isinstance(source.get("content"), str | list):
        inner = source["content"]
        text = inner if isinstance(inner, str) else "\n".join(
            b.get("text", "") for b in inner if isinstance(b, Mapping) and b.get("type") == "text"
        )
    else:
        raise _invalid(
            f"document sources of type '{kind}' (PDF, file) are not supported by freellm; send the text as a "
            "text document or text block",
            f"{where}.source",
        )
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _tool_message(block: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool_result as an OpenAI tool message, plus the images it returned (a tool message carries text
    only, so they go to the user message that follows). ``is_error`` is said in the text, the one place
    every model reads."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _invalid("a tool_result needs tool_use_id", f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            if not isinstance(inner, Mapping):
                raise _invalid("tool_result content must be blocks", f"{where}.content.{k}")
            for part in _user_parts(inner, f"{where}.content.{k}"):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images.append(part)
    elif content is not None:
        raise _invalid("must be a string or a list of blocks", f"{where}.content")
    text = "\n".join(texts)
    if images:
        text = (text + "\n" if text else "") + f"({len(images)} image(s) follow in the next message)"
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant_messages(blocks: list[tuple[Mapping[str, Any], str]]) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _invalid("a tool_use block needs id and name", where)
            arguments = block.get("input") if block.get("input") is not None else {}
            calls.append({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
            })  # fmt: skip
        elif kind in ("thinking", "redacted_thinking"):
            # Earlier reasoning is not replayed: chat-completions upstreams have no input field for it.
            continue
        else:
            raise _invalid(f"assistant content blocks of type '{kind}' are not supported by freellm",
                           f"{where}.type")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _chat_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise _invalid("must be an object", where)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _invalid(
            f"tools of type '{kind}' (Anthropic's server or built-in tools) are not supported by freellm; "
            "declare a custom tool with name and input_schema instead",
            f"{where}.type",
        )
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise _invalid("a tool needs a name", f"{where}.name")
    schema = tool.get("input_schema")
    if not isinstance(schema, Mapping):
        raise _invalid("a tool needs an input_schema object", f"{where}.input_schema")
    function: dict[str, Any] = {"name": tool["name"], "parameters": dict(schema)}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> dict[str, Any]:
    if not isinstance(choice, Mapping):
        raise _invalid("must be an object with a type", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        out: dict[str, Any] = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        return {"tool_choice": "none"}
    elif kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise _invalid("a tool choice of type 'tool' needs the tool's name", "tool_choice.name")
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise _invalid("type must be one of 'auto', 'any', 'tool', 'none'", "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def _reasoning_effort(payload: Mapping[str, Any]) -> str | None:
    """OpenAI's ``reasoning_effort`` for an explicit ``output_config.effort`` or ``thinking`` enabled with a
    budget; adaptive or disabled thinking leaves the upstream's default alone."""
    config = payload.get("output_config")
    if isinstance(config, Mapping) and (effort := _EFFORTS.get(config.get("effort") or "")):
        return effort
    thinking = payload.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int):
        return "medium"
    return "low" if budget < _LOW_BUDGET else "medium" if budget < _MEDIUM_BUDGET else "high"


def _response_format(config: Any) -> dict[str, Any] | None:
    """``output_config.format`` (structured outputs) as OpenAI's json_schema response_format."""
    fmt = config.get("format") if isinstance(config, Mapping) else None
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), Mapping):
        raise _invalid("only {'type': 'json_schema', 'schema': {...}} is supported", "output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(fmt["schema"]), "strict": True}}


# --- answer: chat.completion → Message --------------------------------------------------------------

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def stop_reason(finish_reason: str | None, matched: Any, stop_sequences: Sequence[str], *,
                called: bool = False) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence. Chat completions say only ``stop`` for a stop sequence;
    which one matched is known when the upstream says so (vLLM-based servers put it in ``stop_reason``).
    Some upstreams end an answer with tool calls on ``stop``: it is ``tool_use`` all the same, which is what
    agents (and the SDKs' tool runners) look at before running the tools."""
    if finish_reason in (None, "stop") and called:
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is; text that is no JSON object is kept
    under ``arguments`` so the client's validation can tell the model what went wrong."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def usage_of(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: cached prompt tokens are counted apart from input_tokens, as Anthropic
    counts cache reads."""
    usage = usage if isinstance(usage, Mapping) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    cached = int((details.get("cached_tokens") if isinstance(details, Mapping) else 0) or 0)
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def message_from_completion(completion: Mapping[str, Any], *, model: str,
                            stop_sequences: Sequence[str] = ()) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = _text(message.get("reasoning")) or _text(message.get("reasoning_content"))
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := _text(message.get("content")):
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or tool_use_id(), "name": function.get("name", ""),
                        "input": tool_input(function.get("arguments"))})
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences,
                                   called=bool(message.get("tool_calls")))
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_of(completion.get("usage")),
    }


# --- stream: chat.completion.chunk dicts → Anthropic's events ---------------------------------------


def _event(data: Mapping[str, Any]) -> bytes:
    """An Anthropic stream event: its SSE name is its type."""
    return exchange.sse_event(data["type"], data)


class AnthropicEncoder:
    """The exchange's StreamEncoder for /v1/messages: one content block open at a time, in the order the
    upstream produced them (thinking, text, tool_use), each closed before the next starts.

    Tool-call fragments stream as ``input_json_delta``; a call whose name has not come yet is held until it
    does (a content_block_start needs the name). A fragment for a call already closed (an upstream that
    interleaves parallel calls) is still sent, as a delta of that call's own block index."""

    # Anthropic's streams ping while the model is quiet; a client with an idle timeout keeps waiting.
    keepalive_seconds: float | None = 10.0

    def __init__(self, *, model: str, input_tokens: int, stop_sequences: Sequence[str] = ()) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.stop_sequences = tuple(stop_sequences)
        self.id = message_id()
        self._index = -1  # of the last block started
        self._open: str | None = None  # "thinking" | "text" | "tool:<n>"
        self._tools: dict[int, dict[str, Any]] = {}  # upstream tool index → id, name, block, held args
        self._finish: str | None = None
        self._matched: Any = None

    def start(self) -> bytes:
        message = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }  # fmt: skip
        return _event({"type": "message_start", "message": message}) + self.keepalive()

    def keepalive(self) -> bytes:
        return _event({"type": "ping"})

    def chunk(self, chunk: dict) -> bytes:
        out = bytearray()
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or (choice.get("index") or 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = _text(delta.get("reasoning")) or _text(delta.get("reasoning_content"))
            if reasoning:
                out += self._delta("thinking", {"type": "thinking_delta", "thinking": reasoning})
            if text := _text(delta.get("content")):
                out += self._delta("text", {"type": "text_delta", "text": text})
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, Mapping):
                    out += self._tool_fragment(fragment)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
            if choice.get("stop_reason") is not None:
                self._matched = choice["stop_reason"]
        return bytes(out)

    def finish(self, usage: Usage) -> bytes:
        out = bytearray(self._close())
        # A call whose name never came still gets its block: the client sees what the upstream produced.
        for n, tool in sorted(self._tools.items()):
            if tool["block"] is None:
                out += self._start_tool(n, tool) + self._close()
        reason, sequence = stop_reason(self._finish, self._matched, self.stop_sequences, called=bool(self._tools))
        out += _event({
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        })  # fmt: skip
        out += _event({"type": "message_stop"})
        return bytes(out)

    def fail(self, error: GatewayError) -> bytes:
        """Anthropic's in-stream error event (the status line already said 200); no message_stop follows."""
        return exchange.sse_event("error", error_body(error.status, error.message))

    # -- blocks

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + _event({"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event({"type": "content_block_stop", "index": self._index})

    def _delta(self, kind: str, delta: dict[str, Any], index: int | None = None) -> bytes:
        out = b""
        if index is None:
            if self._open != kind:
                out = self._begin(kind, {"type": "text", "text": ""} if kind == "text" else
                                  {"type": "thinking", "thinking": "", "signature": ""})
            index = self._index
        return out + _event({"type": "content_block_delta", "index": index, "delta": delta})

    def _tool_fragment(self, fragment: Mapping[str, Any]) -> bytes:
        function = fragment.get("function") if isinstance(fragment.get("function"), Mapping) else {}
        n = fragment.get("index")
        if not isinstance(n, int):
            # No index: a fragment naming a call starts one, any other continues the last (as the assembler).
            starts = fragment.get("id") or function.get("name") or not self._tools
            n = len(self._tools) if starts else max(self._tools)
        tool = self._tools.setdefault(n, {"id": None, "name": None, "block": None, "held": []})
        tool["id"] = tool["id"] or fragment.get("id")
        tool["name"] = tool["name"] or function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if tool["block"] is None:
            if arguments:
                tool["held"].append(arguments)
            return self._start_tool(n, tool) if tool["name"] else b""
        return self._json_delta(arguments, tool["block"]) if arguments else b""

    def _start_tool(self, n: int, tool: dict[str, Any]) -> bytes:
        block = {"type": "tool_use", "id": tool["id"] or tool_use_id(), "name": tool["name"] or "", "input": {}}
        out = self._begin(f"tool:{n}", block)
        tool["block"] = self._index
        if held := "".join(tool["held"]):
            tool["held"] = []
            out += self._json_delta(held, tool["block"])
        return out

    def _json_delta(self, partial: str, index: int) -> bytes:
        return self._delta("", {"type": "input_json_delta", "partial_json": partial}, index=index)


# --- errors ----------------------------------------------------------------------------------------

_ERROR_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


# --- models ---------------------------------------------------------------------------------------


def model_info(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One of /v1/models' entries (a chain or a model) in Anthropic's ModelInfo shape."""
    created = datetime.fromtimestamp(entry.get("created") or 0, tz=UTC)
    info: dict[str, Any] = {
        "type": "model",
        "id": entry["id"],
        "display_name": entry["id"],
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }
    if entry.get("context_window"):
        info["max_input_tokens"] = entry["context_window"]
    return info


def model_page(entries: Sequence[Mapping[str, Any]], *, limit: int | None = None, after_id: str | None = None,
               before_id: str | None = None) -> dict[str, Any]:
    """Anthropic's list page (data, first_id, last_id, has_more), paged by after_id / before_id / limit."""
    ids = [entry["id"] for entry in entries]
    start, end = 0, len(entries)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
    window = list(entries[start:end])
    has_more = False
    if limit is not None and len(window) > limit:
        has_more = True
        window = window[-limit:] if before_id is not None and after_id is None else window[:limit]
    data = [model_info(entry) for entry in window]
    return {"data": data, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
            "has_more": has_more}


def render_error(exc: GatewayError) -> HttpResponse:
    """Every error of a /v1/messages request in Anthropic's envelope, with the status and headers
    (Retry-After) it had. A context overflow says "prompt is too long", the words Claude Code reacts to
    by compacting the conversation."""
    message = exc.message
    if exc.code == "context_length_exceeded" and not message.lower().startswith("prompt is too long"):
        message = f"prompt is too long: {message}"
    response = exchange.json_response(error_body(exc.status, message), status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


register_dialect(Dialect.ANTHROPIC, path_prefixes=("/v1/messages",), render_error=render_error)


# --- endpoints ------------------------------------------------------------------------------------

class CountTokensRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    # Required, as Anthropic has it: a missing max_tokens is a 400.
    max_tokens: int = Field(ge=1)
    stream: StrictBool | None = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None


@router.post("/messages", summary="Create a message (Anthropic Messages API, streaming or not)")
async def create_message(request: HttpRequest, payload: MessagesRequest):
    body, user = chat_body(payload.to_upstream())
    stops = tuple(body.get("stop") or ())
    stream = bool(payload.stream)
    # Per requested model: Claude Code sends its small fast model's requests (titles, quota checks) with the
    # same metadata.user_id as the main conversation, and they must not pull that session onto their model.
    session_user = f"{user} ({payload.model})" if user else None
    result = await exchange.chat(request, body, dialect=Dialect.ANTHROPIC, stream=stream,
                                 session_user=session_user)
    if not stream:
        message = message_from_completion(result.completion, model=payload.model, stop_sequences=stops)
        return exchange.with_trail(exchange.json_response(message), result)
    encoder = AnthropicEncoder(model=payload.model, input_tokens=result.ctx.prompt_tokens, stop_sequences=stops)
    return exchange.stream_response(request, result, encoder)


@router.post("/messages/count_tokens", summary="Count a message's input tokens (the gateway's estimate)")
async def count_tokens(request: HttpRequest, payload: CountTokensRequest):
    body, _ = chat_body(payload.to_upstream())
    # An unknown model is a 404 here too, as /v1/messages would answer.
    routing_router.resolve(await get_routing_config(), body["model"], "chat")
    # The same estimate that reserves quota: the serving model's tokenizer is not known before routing.
    return {"input_tokens": estimate_request_tokens(body, output_reserve=0)}


def wants_anthropic_shape(request: HttpRequest) -> bool:
    """/v1/models is shared with OpenAI's clients; Anthropic's SDKs always send anthropic-version."""
    if "anthropic-version" not in request.headers:
        return False
    request.freellm_dialect = Dialect.ANTHROPIC  # its errors too
    return True
