"""Ollama's REST API (``/api/*``), inbound: translation to and from the internal OpenAI shapes.

Pure functions and one stream encoder, no I/O; ``ollama.py`` puts them on the endpoints.

Requests → chat-completions body:
- ``/api/chat`` ``messages`` (``images``: base64 without a data-URL prefix; assistant ``tool_calls`` with
  ``arguments`` as an object and usually no id; ``tool`` messages naming ``tool_name``) → OpenAI messages,
  the calls given ids and each tool result the id of the call it answers (by ``tool_call_id`` when sent,
  else the oldest open call of that name, else the oldest open call).
- ``/api/generate`` ``prompt`` / ``system`` / ``images`` → one system and one user message.
- ``options`` temperature, top_p, num_predict, stop, seed, presence/frequency_penalty → their OpenAI names;
  runtime options of a local model (num_ctx, num_gpu, top_k, mirostat, ...) mean nothing here and are dropped.
- ``format``: ``"json"`` → ``json_object``, a JSON schema → ``json_schema``; ``tools`` pass as they are
  (Ollama uses OpenAI's function tool shape).

Answers → Ollama's shapes: ``message`` (``content``, ``thinking``, ``tool_calls`` with object arguments) or
``response``, ``done``, ``done_reason``, ``prompt_eval_count`` / ``eval_count`` and durations in nanoseconds.
Streams are NDJSON: ``done: false`` objects, then one ``done: true`` object with the counts; an upstream
failure after the first line ends the stream with an ``{"error": ...}`` line (what the ollama clients read).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import time
from typing import Any

from providers.adapters.base import Usage
from routing.errors import GatewayError

# The Ollama release whose API this imitates; clients gate features (tools, thinking) on /api/version.
OLLAMA_VERSION = "0.12.10"
LATEST = ":latest"

DONE_REASONS = {"stop": "stop", "tool_calls": "stop", "function_call": "stop", "length": "length",
                "content_filter": "stop"}

_SAMPLING_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

_IMAGE_SIGNATURES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def error_payload(exc: GatewayError) -> dict:
    return {"error": exc.message}


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value")


# --- names -----------------------------------------------------------------------------------------


def model_name(name: Any) -> str:
    """Ollama's ``name:tag`` → the gateway's name: ``auto:latest`` → ``auto`` (other tags are part of the id,
    as in ``gpt-oss:120b``)."""
    if not isinstance(name, str) or not name.strip():
        raise _bad("model is required", "model")
    return name.strip().removesuffix(LATEST)


def tag_name(name: str) -> str:
    """The gateway's name as Ollama lists it: a tag is added unless the last segment already has one."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + LATEST


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


# --- requests --------------------------------------------------------------------------------------


def _image_url(image: Any, param: str) -> dict:
    if not isinstance(image, str) or not image:
        raise _bad("images must be base64-encoded strings", param)
    if image.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": image}}
    try:
        head = base64.b64decode(image[:64] + "=" * (-len(image[:64]) % 4))
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("an image is not valid base64", param) from None
    mime = next((m for signature, m in _IMAGE_SIGNATURES if head.startswith(signature)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}}


def _content(text: Any, images: Any, param: str) -> str | list[dict]:
    if text is not None and not isinstance(text, str):
        raise _bad("content must be a string", f"{param}.content")
    if not images:
        return text or ""
    if not isinstance(images, list):
        raise _bad("images must be a list", f"{param}.images")
    parts: list[dict] = [{"type": "text", "text": text}] if text else []
    parts.extend(_image_url(image, f"{param}.images.{k}") for k, image in enumerate(images))
    return parts


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def to_openai_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list):
        raise _bad("messages must be a list", "messages")
    out: list[dict] = []
    open_calls: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    count = 0
    for i, message in enumerate(messages):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise _bad("each message must be an object", param)
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise _bad("role must be system, user, assistant or tool", f"{param}.role")
        if role == "tool":
            out.append({"role": "tool", "content": _text(message.get("content"), param),
                        "tool_call_id": _answered(open_calls, message)})
            continue
        converted: dict[str, Any] = {"role": role, "content": _content(message.get("content"), message.get("images"),
                                                                        param)}
        if role == "assistant":
            if message.get("thinking"):
                converted["reasoning"] = message["thinking"]
            calls = []
            for k, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not function.get("name"):
                    raise _bad("a tool call needs function.name", f"{param}.tool_calls.{k}.function.name")
                count += 1
                call_id = call.get("id") or f"call_{count}_{function['name']}"
                open_calls.append((call_id, function["name"]))
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": function["name"], "arguments": _arguments(function.get("arguments"))}})
            if calls:
                converted["tool_calls"] = calls
                converted["content"] = converted["content"] or None
        out.append(converted)
    return out


def _text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if not isinstance(content, str):
        raise _bad("content must be a string", f"{param}.content")
    return content


def _answered(open_calls: list[tuple[str, str]], message: dict) -> str:
    wanted_id, wanted_name = message.get("tool_call_id"), message.get("tool_name") or message.get("name")
    for index, (call_id, name) in enumerate(open_calls):
        if (wanted_id and call_id == wanted_id) or (not wanted_id and (not wanted_name or name == wanted_name)):
            del open_calls[index]
            return call_id
    if open_calls and not wanted_id:
        return open_calls.pop(0)[0]
    return wanted_id or f"call_{wanted_name or 'tool'}"


def _options(options: Any) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _bad("options must be an object", "options")
    out = {openai: options[name] for name, openai in _SAMPLING_OPTIONS.items() if options.get(name) is not None}
    temperature = out.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        raise _bad("options.temperature must be a number from 0 to 2", "options.temperature")
    predict = options.get("num_predict")
    if predict is not None:
        if not isinstance(predict, int) or isinstance(predict, bool):
            raise _bad("options.num_predict must be an integer", "options.num_predict")
        # -1 (unbounded) and -2 (fill the context) leave the cap to the model.
        if predict > 0:
            out["max_tokens"] = predict
    if (stop := options.get("stop")) is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("options.stop must be a list of strings", "options.stop")
        if stops:
            out["stop"] = stops
    return out


def _response_format(fmt: Any) -> dict | None:
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise _bad('format must be "json" or a JSON schema object', "format")


def _common(body: dict) -> dict:
    out = _options(body.get("options"))
    if response_format := _response_format(body.get("format")):
        out["response_format"] = response_format
    return out


def chat_request(body: dict, model: str) -> dict:
    """``/api/chat`` → chat-completions body."""
    request: dict[str, Any] = {"model": model, "messages": to_openai_messages(body.get("messages"))}
    if tools := body.get("tools"):
        if not isinstance(tools, list):
            raise _bad("tools must be a list", "tools")
        if not all(isinstance(tool, dict) for tool in tools):
            raise _bad("each tool must be an object", "tools")
        request["tools"] = [{**tool, "type": tool.get("type") or "function"} for tool in tools]
    request.update(_common(body))
    return request


def generate_request(body: dict, model: str) -> dict:
    """``/api/generate`` → chat-completions body (a system prompt and the prompt as one user turn)."""
    if body.get("suffix"):
        raise _bad("suffix (fill-in-the-middle) is not supported: freellm's upstreams are chat models", "suffix")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string", "prompt")
    messages: list[dict] = []
    if system := body.get("system"):
        messages.append({"role": "system", "content": _text(system, "system")})
    messages.append({"role": "user", "content": _content(prompt, body.get("images"), "prompt")})
    return {"model": model, "messages": messages, **_common(body)}


def embed_inputs(body: dict, *, legacy: bool) -> list[str]:
    """``/api/embed`` ``input`` (a string or strings) or the older ``/api/embeddings`` ``prompt``."""
    field = "prompt" if legacy else "input"
    value = body.get(field)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise _bad(f"{field} must be a non-empty string" + ("" if legacy else " or list of non-empty strings"), field)
    return texts


# --- answers ---------------------------------------------------------------------------------------


def _tool_calls(calls: list[dict]) -> list[dict]:
    out = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"arguments": function.get("arguments")}
        out.append({"id": call.get("id") or f"call_{index}",
                    "function": {"index": index, "name": function.get("name", ""),
                                 "arguments": arguments if isinstance(arguments, dict) else {"value": arguments}}})
    return out


class Timing:
    """The durations Ollama reports, in nanoseconds: from the request's start to the first token (prompt
    evaluation, as a client sees it) and from there to the end (generation). Clients divide eval_count by
    eval_duration for tokens per second, so it is never 0."""

    def __init__(self) -> None:
        self.started = time.monotonic_ns()
        self.first: int | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.monotonic_ns()

    def answered_in(self, ms: int) -> None:
        """A plain answer, read whole by the exchange: generation is the answering call's time."""
        self.first = max(self.started, time.monotonic_ns() - ms * 1_000_000)

    def stats(self, usage: Usage) -> dict:
        end = time.monotonic_ns()
        first = min(self.first or end, end - 1)
        return {
            "total_duration": end - self.started,
            "load_duration": 0,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": max(0, first - self.started),
            "eval_count": usage.completion_tokens,
            "eval_duration": end - first,
        }


def _usage_of(completion: dict) -> Usage:
    usage = completion.get("usage") or {}
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def chat_response(completion: dict, *, model: str, timing: Timing, think: bool = True) -> dict:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if think and message.get("reasoning"):
        out_message["thinking"] = message["reasoning"]
    if message.get("tool_calls"):
        out_message["tool_calls"] = _tool_calls(message["tool_calls"])
    return {"model": model, "created_at": now_iso(), "message": out_message, "done": True,
            "done_reason": DONE_REASONS.get(choice.get("finish_reason") or "stop", "stop"),
            **timing.stats(_usage_of(completion))}


def generate_response(completion: dict, *, model: str, timing: Timing, think: bool = True) -> dict:
    chat = chat_response(completion, model=model, timing=timing, think=think)
    message = chat.pop("message")
    out = {"model": model, "created_at": chat.pop("created_at"), "response": message["content"]}
    if "thinking" in message:
        out["thinking"] = message["thinking"]
    return {**out, **chat}


def loaded_response(model: str, *, generate: bool, unload: bool) -> dict:
    """An empty chat or prompt: Ollama's "load the model" call, answered at once (nothing to load here)."""
    out: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if generate:
        out["response"] = ""
    else:
        out["message"] = {"role": "assistant", "content": ""}
    return {**out, "done": True, "done_reason": "unload" if unload else "load"}


def embed_response(embeddings: dict, *, model: str, timing: Timing) -> dict:
    vectors = [item["embedding"] for item in sorted(embeddings.get("data") or [], key=lambda d: d.get("index", 0))]
    prompt = ((embeddings.get("usage") or {}).get("prompt_tokens")) or 0
    stats = timing.stats(Usage(prompt, 0))
    return {"model": model, "embeddings": vectors, "total_duration": stats["total_duration"], "load_duration": 0,
            "prompt_eval_count": prompt}


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def model_details(family: str) -> dict:
    return {"parent_model": "", "format": "freellm", "family": family, "families": [family],
            "parameter_size": "", "quantization_level": ""}


def tags_entry(name: str, *, family: str, modified_at: str) -> dict:
    tagged = tag_name(name)
    return {"name": tagged, "model": tagged, "modified_at": modified_at, "size": 0, "digest": digest(tagged),
            "details": model_details(family)}


def show_response(name: str, *, family: str, context_window: int | None, capabilities: list[str],
                  modified_at: str) -> dict:
    info: dict[str, Any] = {"general.architecture": "freellm", "general.basename": name}
    if context_window:
        info["freellm.context_length"] = context_window
    return {"modelfile": f"# served by freellm\nFROM {tag_name(name)}\n", "parameters": "", "template": "",
            "details": model_details(family), "model_info": info, "capabilities": capabilities,
            "modified_at": modified_at}


class StreamEncoder:
    """OpenAI chunks → Ollama's NDJSON: a ``done: false`` object per piece of text or thinking, the tool
    calls (assembled from their fragments) in one more, then the ``done: true`` object with the counts."""

    # None: no keepalive (the ollama clients parse every line as JSON, so there is nothing safe to send).
    keepalive_seconds = None

    def __init__(self, *, model: str, generate: bool, timing: Timing, think: bool = True) -> None:
        self.model = model
        self.generate = generate
        self.timing = timing
        self.think = think
        self.reason: str | None = None
        self.calls: dict[int, dict] = {}

    def _line(self, data: dict) -> bytes:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def _piece(self, content: str = "", thinking: str = "", tool_calls: list[dict] | None = None,
               **extra: Any) -> dict:
        out: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.generate:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            out["message"] = message
        return {**out, "done": False, **extra}

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict) -> bytes:
        out = b""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            thinking = (delta.get("reasoning") or "") if self.think else ""
            for fragment in delta.get("tool_calls") or ():
                call = self.calls.setdefault(fragment.get("index", len(self.calls)),
                                             {"id": None, "function": {"name": "", "arguments": ""}})
                call["id"] = call["id"] or fragment.get("id")
                function = fragment.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.reason = choice["finish_reason"]
            if content or thinking or delta.get("tool_calls"):
                self.timing.mark_first()
            if content or thinking:
                out += self._line(self._piece(content, thinking))
        return out

    def finish(self, usage: Usage) -> bytes:
        out = b""
        if self.calls and not self.generate:
            calls = _tool_calls([self.calls[index] for index in sorted(self.calls)])
            out += self._line(self._piece(tool_calls=calls))
        last = self._piece()
        last.update(done=True, done_reason=DONE_REASONS.get(self.reason or "stop", "stop"), **self.timing.stats(usage))
        return out + self._line(last)

    def fail(self, error: GatewayError) -> bytes:
        return self._line(error_payload(error))

    def keepalive(self) -> bytes:
        # The ollama clients parse every line as JSON: an empty one would break them.
        return b""
