"""Tool-call robustness: what free models get wrong in an answer, put right before any dialect relays it.

Pure functions over OpenAI shapes (a ``chat.completion`` dict, ``chat.completion.chunk`` dicts) and a
streaming state machine; the exchange (routing/api) runs every answer through them, plain or streamed, so
each dialect benefits:

- **Text tool calls.** When the request declared tools (and ``tool_choice`` is not ``"none"``), a tool call
  written as text becomes a real ``tool_calls`` entry: Hermes/Qwen ``<tool_call>{"name", "arguments"}
  </tool_call>``, ``<function=name>{...}</function>`` (Llama) and ``<function=name><parameter=k>v
  </parameter></function>`` (Qwen3-Coder), Kimi's ``<|tool_call_begin|>functions.name:0
  <|tool_call_argument_begin|>{...}<|tool_call_end|>`` tokens, DeepSeek's ``<｜tool▁call▁begin｜>`` tokens,
  and an answer that is nothing but a JSON object naming a declared tool or matching exactly one declared
  tool's parameters schema (not when the request asked for a JSON answer). Calls naming a tool the request
  did not declare stay text.
- **Arguments** that are double-encoded JSON (a JSON string holding the object) are decoded once; an empty
  arguments string becomes ``{}``.
- **Reasoning** written inline as a leading ``<think>…</think>`` block moves to ``reasoning``.
- **Empty answers** (no content, no tool call, no reasoning) raise ``UpstreamError(EMPTY)``, which fails over
  like a 5xx; the streaming machine raises it before the first byte, since a stream only begins (primes) on
  real output.

In a stream, text that might be a tool call is held back until it clearly is one (then it goes out as
``tool_calls`` deltas at the end of the answer) or clearly is not (then it goes out as the text it was).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from providers.adapters.base import ErrorKind, UpstreamError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Where a text tool call may begin (the bare JSON object only counts at the start of the answer).
MARKERS = (
    "<tool_call>",
    "<function=",
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
)
# A truncated answer or a refusal may legitimately be empty: the client's own limit or a filter, not a failure.
_MAY_BE_EMPTY = ("length", "content_filter")
_JSON_FORMATS = ("json_object", "json_schema")


@dataclass(frozen=True)
class ToolSpec:
    """What the request allows the rescue to do."""

    tools: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)  # name → parameters schema
    rescue: bool = False  # tools were declared and tool_choice is not "none"
    bare_json: bool = False  # a bare JSON answer may be a call (the client did not ask for a JSON answer)


def tool_spec(body: Mapping[str, Any]) -> ToolSpec:
    """The ToolSpec of an internal (OpenAI chat) request."""
    tools: dict[str, Mapping[str, Any] | None] = {}
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters")
    for function in body.get("functions") or ():  # the legacy form
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters")
    rescue = bool(tools) and body.get("tool_choice") != "none"
    response_format = body.get("response_format")
    wants_json = isinstance(response_format, Mapping) and response_format.get("type") in _JSON_FORMATS
    return ToolSpec(tools, rescue, rescue and not wants_json)


# --- arguments -------------------------------------------------------------------------------------


def repair_arguments(arguments: Any) -> str:
    """A tool call's ``arguments`` as the JSON text of an object where it can be: objects are encoded,
    double-encoded JSON is decoded once, an empty string is ``{}``; anything else is left as it is."""
    if isinstance(arguments, dict | list):
        return json.dumps(arguments, ensure_ascii=False)
    if not isinstance(arguments, str):
        return "{}" if arguments is None else json.dumps(arguments)
    if not arguments.strip():
        return "{}"
    try:
        decoded = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(decoded, str):
        try:
            inner = json.loads(decoded)
        except ValueError:
            return arguments
        if isinstance(inner, dict):
            return json.dumps(inner, ensure_ascii=False)
    return arguments


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {
        "id": "call_" + secrets.token_hex(12),
        "type": "function",
        "function": {"name": name, "arguments": repair_arguments(arguments)},
    }


# --- text tool calls -------------------------------------------------------------------------------

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FUNCTION = re.compile(r"<function=([^>\s]+)>\s*(.*?)\s*(?:</function>|$)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.S)
_KIMI = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([^\s<:]+)(?::\d+)?\s*<\|tool_call_argument_begin\|>\s*(.*?)\s*"
    r"(?:<\|tool_call_end\|>|$)",
    re.S,
)
_KIMI_SECTION = re.compile(r"<\|tool_calls_section_(?:begin|end)\|>")
_DEEPSEEK = re.compile(
    r"<｜tool▁call▁begin｜>\s*(?:function\s*<｜tool▁sep｜>\s*([^\s<]+)|([^\s<]+?)\s*<｜tool▁sep｜>)\s*(.*?)\s*"
    r"(?:<｜tool▁call▁end｜>|$)",
    re.S,
)
_DEEPSEEK_SECTION = re.compile(r"<｜tool▁calls▁(?:begin|end)｜>")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.S)


def find_text_tool_calls(text: str, spec: ToolSpec) -> tuple[str | None, list[dict[str, Any]]] | None:
    """(the remaining content or None, the tool calls) when ``text`` holds tool calls of declared tools
    written as text; None when it holds none."""
    if not spec.rescue or not text:
        return None
    for find in (_hermes_calls, _function_calls, _kimi_calls, _deepseek_calls):
        found = find(text, spec)
        if found is not None:
            return found
    if spec.bare_json:
        calls = _bare_json_calls(text, spec)
        if calls:
            return None, calls
    return None


def _collect(text: str, pattern: re.Pattern, parse, spec: ToolSpec, sections: re.Pattern | None = None):
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        call = parse(match, spec)
        if call is None:
            continue
        kept.append(text[position:match.start()])
        position = match.end()
        calls.append(call)
    if not calls:
        return None
    kept.append(text[position:])
    rest = "".join(kept)
    if sections is not None:
        rest = sections.sub("", rest)
    rest = rest.strip()
    return (rest or None), calls


def _hermes_calls(text: str, spec: ToolSpec):
    def parse(match: re.Match, spec: ToolSpec):
        inner = match.group(1)
        if inner.startswith("<function="):
            function = _FUNCTION.match(inner)
            return _parse_function(function, spec) if function else None
        return _named_call(_loads(inner), spec)

    return _collect(text, _HERMES, parse, spec)


def _function_calls(text: str, spec: ToolSpec):
    return _collect(text, _FUNCTION, _parse_function, spec)


def _parse_function(match: re.Match, spec: ToolSpec):
    name, body = match.group(1), match.group(2)
    if name not in spec.tools:
        return None
    if body.startswith("<parameter="):
        properties = (spec.tools[name] or {}).get("properties") or {}
        arguments = {key: _parameter_value(value, properties.get(key)) for key, value in _PARAMETER.findall(body)}
        return _call(name, arguments)
    arguments = _loads(body) if body else {}
    if arguments is None and body:
        return None
    return _call(name, arguments if arguments is not None else {})


def _parameter_value(raw: str, schema: Any) -> Any:
    """A ``<parameter=k>v</parameter>`` value: text, or JSON when the schema says it is not a string."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if kind in (None, "string") or (isinstance(kind, list) and "string" in kind):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _kimi_calls(text: str, spec: ToolSpec):
    def parse(match: re.Match, spec: ToolSpec):
        name, arguments = match.group(1), _loads(match.group(2))
        return _call(name, arguments) if name in spec.tools and arguments is not None else None

    return _collect(text, _KIMI, parse, spec, _KIMI_SECTION)


def _deepseek_calls(text: str, spec: ToolSpec):
    def parse(match: re.Match, spec: ToolSpec):
        name = match.group(1) or match.group(2)
        body = match.group(3)
        fenced = _FENCE.match(body)
        arguments = _loads(fenced.group(1) if fenced else body)
        return _call(name, arguments) if name in spec.tools and arguments is not None else None

    return _collect(text, _DEEPSEEK, parse, spec, _DEEPSEEK_SECTION)


def _bare_json_calls(text: str, spec: ToolSpec) -> list[dict[str, Any]]:
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    value = _loads(fenced.group(1) if fenced else stripped)
    items = value if isinstance(value, list) and value else [value]
    calls = []
    for item in items:
        call = _named_call(item, spec) or _schema_call(item, spec)
        if call is None:
            return []  # all or nothing: a list that is partly something else is an answer
        calls.append(call)
    return calls


def _named_call(value: Any, spec: ToolSpec):
    """{"name": <declared tool>, "arguments" | "parameters": {...}}, also wrapped as {"function": {...}}."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or name not in spec.tools:
        return None
    extra = set(value) - {"name", "arguments", "parameters", "type", "id"}
    if extra:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    return _call(name, arguments)


def _schema_call(value: Any, spec: ToolSpec):
    """A bare object of arguments that fits exactly one declared tool: every key a declared property, every
    required property present, and the schema validates it."""
    if not isinstance(value, dict) or not value:
        return None
    matching = [name for name, schema in spec.tools.items() if _fits(value, schema)]
    return _call(matching[0], value) if len(matching) == 1 else None


def _fits(value: dict, schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not set(value) <= set(properties):
        return False
    if not set(schema.get("required") or ()) <= set(value):
        return False
    try:
        return Draft202012Validator(schema).is_valid(value)
    except SchemaError:
        return True  # the keys fit; a schema the validator cannot read is not held against the call


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- reasoning ------------------------------------------------------------------------------------


def split_think(content: str) -> tuple[str | None, str]:
    """(reasoning, content) of an answer that opens with a ``<think>`` block; (None, content) otherwise."""
    stripped = content.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, content
    inner = stripped[len(THINK_OPEN):]
    end = inner.find(THINK_CLOSE)
    if end < 0:
        return inner.strip(), ""
    return inner[:end].strip(), inner[end + len(THINK_CLOSE):].lstrip()


# --- a whole answer -------------------------------------------------------------------------------


def _empty_answer() -> UpstreamError:
    return UpstreamError(ErrorKind.EMPTY, "the upstream answered with no content, no tool call and no reasoning",
                         status=502)


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value)


def rescue_completion(completion: dict[str, Any], spec: ToolSpec) -> dict[str, Any]:
    """The ``chat.completion`` put right (a copy): reasoning split out, text tool calls made real, arguments
    repaired. Raises UpstreamError(EMPTY) for an answer with nothing in it."""
    # A copy of what this may change (each choice, its message, its tool calls), not a deep copy of the whole
    # answer: this runs on every plain answer.
    completion = {**completion}
    if isinstance(completion.get("choices"), list):
        completion["choices"] = [_writable_choice(choice) for choice in completion["choices"]]
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            reasoning, content = split_think(content)
            if reasoning:
                message["reasoning"] = "\n".join(r for r in (message.get("reasoning"), reasoning) if r)
            message["content"] = content
        if message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                function["arguments"] = repair_arguments(function.get("arguments"))
        elif isinstance(content, str) and (found := find_text_tool_calls(content, spec)):
            message["content"], message["tool_calls"] = found
            choice["finish_reason"] = "tool_calls"
        empty = not any(_has_text(message.get(k)) for k in ("content", "tool_calls", "reasoning",
                                                             "reasoning_content", "refusal"))
        if empty and choice.get("finish_reason") not in _MAY_BE_EMPTY:
            raise _empty_answer()
    return completion


def _writable_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    choice = {**choice}
    if isinstance(message := choice.get("message"), dict):
        choice["message"] = message = {**message}
        if isinstance(calls := message.get("tool_calls"), list):
            message["tool_calls"] = [
                {**call, "function": {**call["function"]}} if isinstance(call.get("function"), dict) else {**call}
                for call in calls
            ]
    return choice


# --- a streamed answer ----------------------------------------------------------------------------

_START, _THINK, _TEXT, _HELD, _HELD_JSON = "start", "think", "text", "held", "held-json"


class StreamRescuer:
    """Feeds on upstream ``chat.completion.chunk`` dicts and returns the chunks to send in their place.

        rescuer = StreamRescuer(tool_spec(body))
        for chunk in upstream: send(rescuer.feed(chunk))   # may raise UpstreamError(EMPTY) at the finish
        send(rescuer.close())                              # upstream ended: anything still held

    ``begun`` turns true with the first real output (non-blank text, reasoning or a tool call), whether or not
    it went out yet. Only the first choice is worked on (the gateway serves n=1); others pass unchanged.
    """

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.begun = False
        self._state = _START
        self._think_done = False
        self._reasoned = False  # some of the <think> block went out (its leading blank is already gone)
        self._emitted_text = False  # non-blank content went out: a bare JSON answer is no longer possible
        self._pending = ""  # content not yet sent (a possible marker, think tag or tool call)
        self._real_calls = False
        self._held_arguments: dict[int, list[str]] = {}  # real calls whose arguments look double-encoded
        self._template: dict[str, Any] | None = None
        self._finished = False
        self._scan: _JsonScan | None = None  # how far a possible bare JSON answer has been read

    # -- public --

    @property
    def finished(self) -> bool:
        """The upstream's finish reason came (or the stream ended)."""
        return self._finished

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        choices = chunk.get("choices") or []
        first = next((c for c in choices if c.get("index", 0) == 0), None)
        if first is None:
            return [chunk]
        self._template = chunk
        delta = dict(first.get("delta") or {})
        finish = first.get("finish_reason")
        out_delta: dict[str, Any] = {k: v for k, v in delta.items() if k not in ("content", "tool_calls")}
        if any(_has_text(delta.get(k)) for k in ("content", "reasoning", "reasoning_content", "refusal")) or (
            delta.get("tool_calls")
        ):
            self.begun = True
        emitted: list[dict[str, Any]] = []
        if delta.get("tool_calls"):
            if not self._real_calls:
                self._real_calls = True
                # A real tool call: whatever text was held is text after all.
                content, reasoning = self._release()
                emitted.extend(self._delta_chunks(content=content, reasoning=reasoning))
            out_delta["tool_calls"] = self._real_call_deltas(delta["tool_calls"])
            if not out_delta["tool_calls"]:
                del out_delta["tool_calls"]
        text = delta.get("content")
        if isinstance(text, str) and text:
            content, reasoning = self._text(text)
            if content:
                out_delta["content"] = content
            if reasoning:
                out_delta["reasoning"] = (out_delta.get("reasoning") or "") + reasoning
        elif "content" in delta and set(delta) <= {"role", "content"} and delta.get("role"):
            out_delta["content"] = delta["content"]  # the opening {"role": "assistant", "content": ""}
        if finish is not None:
            if not self.begun and finish not in _MAY_BE_EMPTY:
                raise _empty_answer()
            # What this chunk carried came before anything still held: it goes out first.
            output = {k: out_delta.pop(k) for k in ("content", "reasoning", "tool_calls") if k in out_delta}
            emitted.extend(self._delta_chunks(**output))
            flushed, rescued = self._flush()
            emitted.extend(flushed)
            if rescued:
                finish = "tool_calls"
            self._finished = True
        rest = [c for c in choices if c is not first]
        if out_delta or finish is not None or rest or chunk.get("usage"):
            emitted.append({**chunk, "choices": [{**first, "delta": out_delta, "finish_reason": finish}, *rest]})
        return emitted

    def close(self) -> list[dict[str, Any]]:
        """The upstream ended (without a finish reason, or after it): send what is still held."""
        if self._finished:
            return []
        if not self.begun:
            raise _empty_answer()
        self._finished = True
        flushed, _ = self._flush()
        return flushed

    # -- text --

    def _text(self, piece: str) -> tuple[str, str]:
        """(content, reasoning) to send now for this piece of upstream content."""
        self._pending += piece
        content, reasoning = "", ""
        while True:
            state, pending = self._state, self._pending
            if state == _START:
                stripped = pending.lstrip()
                if not stripped:
                    return content, reasoning
                if not self._think_done and THINK_OPEN.startswith(stripped):
                    return content, reasoning  # may still become <think>
                if not self._think_done and stripped.startswith(THINK_OPEN):
                    self._state, self._pending = _THINK, stripped[len(THINK_OPEN):]
                    continue
                if self._think_done:
                    self._pending = stripped  # the blank lines between </think> and the answer
                self._state = _TEXT
                continue
            if state == _THINK:
                if not reasoning and not self._reasoned:
                    pending = self._pending = pending.lstrip()
                end = pending.find(THINK_CLOSE)
                if end >= 0:
                    reasoning += pending[:end].rstrip()
                    self._pending = pending[end + len(THINK_CLOSE):].lstrip()
                    self._state, self._think_done = _START, True
                    continue
                # Held back: a possible start of </think>, and blanks that may turn out to end the block.
                keep = _partial_suffix(pending, (THINK_CLOSE,))
                head = pending[: len(pending) - keep]
                keep += len(head) - len(head.rstrip())
                reasoning += pending[: len(pending) - keep]
                self._pending = pending[len(pending) - keep:]
                self._reasoned = self._reasoned or bool(reasoning)
                return content, reasoning
            if state == _TEXT:
                if not self.spec.rescue or self._real_calls:
                    content += self._take(len(pending))
                    return content, reasoning
                if self.spec.bare_json and not self._emitted_text and pending.lstrip()[:1] in ("{", "[", "`"):
                    self._state = _HELD_JSON
                    continue
                starts = [i for i in (pending.find(m) for m in MARKERS) if i >= 0]
                if starts:
                    content += self._take(min(starts))
                    self._state = _HELD
                    return content, reasoning
                keep = _partial_suffix(pending, MARKERS)
                content += self._take(len(pending) - keep)
                return content, reasoning
            if state == _HELD_JSON:
                if self._scan is None:
                    self._scan = _JsonScan()
                progress, value = self._scan.advance(pending)
                if progress == "open":
                    return content, reasoning
                if progress == "complete" and _bare_json_calls(value, self.spec):
                    self._state = _HELD  # a call: held to the end, parsed with whatever follows
                    return content, reasoning
                # Clearly not a call: it is text, and no later text can be a bare JSON call either.
                self._emitted_text = True
                self._scan = None
                self._state = _TEXT
                continue
            return content, reasoning  # _HELD: everything waits for the end

    def _take(self, count: int) -> str:
        taken, self._pending = self._pending[:count], self._pending[count:]
        if taken.strip():
            self._emitted_text = True
        return taken

    def _release(self) -> tuple[str, str]:
        """Everything held, as what it is without a rescue: (content, reasoning)."""
        pending, self._pending = self._pending, ""
        if self._state == _THINK:
            self._state = _TEXT
            return "", pending
        if self._state != _START or pending.strip():
            self._state = _TEXT
        return pending, ""

    def _flush(self) -> tuple[list[dict[str, Any]], bool]:
        """At the end: held text as tool calls or as text, then repaired held arguments. (chunks, rescued)"""
        chunks: list[dict[str, Any]] = []
        rescued = False
        if self._state in (_HELD, _HELD_JSON) and not self._real_calls:
            found = find_text_tool_calls(self._pending, self.spec)
            if found is not None:
                rest, calls = found
                self._pending = ""
                if rest:
                    chunks.extend(self._delta_chunks(content=rest))
                for index, call in enumerate(calls):
                    chunks.extend(self._delta_chunks(tool_calls=[{"index": index, **call}]))
                rescued = True
        content, reasoning = self._release()
        chunks[:0] = self._delta_chunks(content=content, reasoning=reasoning)
        for index, pieces in sorted(self._held_arguments.items()):
            arguments = repair_arguments("".join(pieces))
            chunks.extend(self._delta_chunks(tool_calls=[{"index": index, "function": {"arguments": arguments}}]))
        self._held_arguments.clear()
        return chunks, rescued

    # -- real tool calls --

    def _real_call_deltas(self, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pass real tool-call deltas on, holding the argument fragments of a call whose arguments begin as a
        JSON string (double-encoded): they go out decoded at the end."""
        out = []
        for delta in deltas:
            index = delta.get("index", 0)
            function = delta.get("function") or {}
            fragment = function.get("arguments")
            if isinstance(fragment, str) and (index in self._held_arguments or fragment.lstrip().startswith('"')):
                self._held_arguments.setdefault(index, []).append(fragment)
                delta = {**delta, "function": {k: v for k, v in function.items() if k != "arguments"}}
                if not delta["function"]:
                    del delta["function"]
                if set(delta) <= {"index"}:
                    continue
            out.append(delta)
        return out

    def _delta_chunks(self, **delta: Any) -> list[dict[str, Any]]:
        delta = {k: v for k, v in delta.items() if v}
        if not delta:
            return []
        template = self._template or {"object": "chat.completion.chunk"}
        base = {k: v for k, v in template.items() if k not in ("choices", "usage")}
        return [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}]


def _partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of one of the markers (to hold back)."""
    # Every marker starts with "<": without one near the end, nothing to hold (the common case, kept cheap).
    if "<" not in text[-max(len(m) for m in markers):]:
        return 0
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-size:]):
                best = size
                break
    return best


class _JsonScan:
    """Reads a bare JSON answer in the making (optionally in a ``` fence) as it grows, each character once:
    ("open", "") while its first object or array is unfinished, ("complete", <its text>) once it closed,
    ("not", "") when it is not JSON at all."""

    def __init__(self) -> None:
        self.start: int | None = None  # where the value begins in the text
        self.position = 0
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def advance(self, text: str) -> tuple[str, str]:
        if self.start is None:
            opening = _json_start(text)
            if opening in ("open", "not"):
                return opening, ""
            self.start = self.position = opening
        for position in range(self.position, len(text)):
            char = text[position]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return "complete", text[self.start: position + 1]
        self.position = len(text)
        return "open", ""


def _json_start(text: str) -> int | str:
    """Where the JSON value of a bare answer begins (after blanks and an opening ``` fence line), or "open"
    while that cannot be told yet, or "not"."""
    offset = len(text) - len(text.lstrip())
    rest = text[offset:]
    if rest.startswith("`"):
        if not "```".startswith(rest[:3]):
            return "not"
        newline = rest.find("\n")
        if newline < 0:
            return "open" if len(rest) < 16 and re.fullmatch(r"`{1,3}[a-zA-Z]*", rest) else "not"
        offset += newline + 1
        rest = text[offset:]
        blank = len(rest) - len(rest.lstrip())
        offset, rest = offset + blank, rest[blank:]
        if not rest:
            return "open"
    return offset if rest[:1] in ("{", "[") else "not"
