"""HTTP plumbing the native adapters share: timeouts, transport errors, SSE reading, OpenAI result shapes.

No Django here. Every failure leaves as ``UpstreamError`` so the router sees one vocabulary whichever
provider answered.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import struct
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from .base import ErrorKind, Timeouts, UpstreamError, Usage

# Turns a non-2xx response (body already read) into the error the router acts on.
ErrorMapper = Callable[[httpx.Response], UpstreamError]


def httpx_timeout(timeouts: Timeouts, *, read: float | None = None) -> httpx.Timeout:
    read = timeouts.first_token if read is None else read
    return httpx.Timeout(connect=timeouts.connect, read=read, write=timeouts.first_token, pool=timeouts.connect)


def transport_error(exc: BaseException, provider: str) -> UpstreamError:
    """A failure below HTTP (no status): connect refused, timeouts, a connection cut mid-body."""
    if getattr(exc, "explained", False):
        # The SSRF guard's refusal (providers.netguard): says what was refused and how to allow it.
        return UpstreamError(ErrorKind.CONNECTION, f"{provider}: {exc}")
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return UpstreamError(ErrorKind.CONNECTION, f"{provider}: could not connect ({type(exc).__name__})")
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamError(ErrorKind.TIMEOUT, f"{provider}: no answer in time")
    return UpstreamError(ErrorKind.CONNECTION, f"{provider}: connection failed ({type(exc).__name__})")


def kind_for_status(status: int) -> ErrorKind:
    """The default reading of an HTTP status; adapters refine it from the provider's error body."""
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 402, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 413:
        return ErrorKind.CONTEXT_LENGTH
    if status >= 500:
        return ErrorKind.SERVER
    return ErrorKind.BAD_REQUEST


# Runs of a secret at least this long are blanked wherever they appear: a provider quoting a key "minus a few
# characters" (or its middle) still gives most of it away.
REDACT_RUN = 8


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every run of ``REDACT_RUN`` or more characters of any of ``secrets`` (provider keys, the
    client's unified key) replaced by ``***``; a shorter secret only where it appears whole. The one function
    for upstream error text, before it reaches a client, a log line or a row."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        size = min(REDACT_RUN, len(secret))
        # Every window of the secret found in the text marks its span; overlapping marks merge below, so any
        # longer run is covered whole.
        for gram in {secret[i:i + size] for i in range(len(secret) - size + 1)}:
            start = text.find(gram)
            while start != -1:
                spans.append((start, start + size))
                start = text.find(gram, start + 1)
    if not spans:
        return text
    spans.sort()
    out, last = [], 0
    merged_start, merged_end = spans[0]
    for start, end in spans[1:]:
        if start <= merged_end:
            merged_end = max(merged_end, end)
            continue
        out += [text[last:merged_start], "***"]
        last = merged_end
        merged_start, merged_end = start, end
    out += [text[last:merged_start], "***", text[merged_end:]]
    return "".join(out)


def response_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def json_body(value: Any, headers: Mapping[str, str] | None) -> tuple[bytes, dict[str, str]]:
    """A request's JSON body, serialised with orjson (httpx's ``json=`` runs the standard library's encoder:
    about 1.2 ms for an agent's 200 KB prompt, against 0.15 ms), and the headers that say so."""
    try:
        content = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits, which the standard library still writes
        content = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    headers = dict(headers or {})
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return content, headers


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    timeouts: Timeouts,
    to_error: ErrorMapper,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
) -> httpx.Response:
    """One non-streaming call; the whole answer must arrive within ``first_token``."""
    if json is not None:
        content, headers = json_body(json, headers)
    try:
        async with asyncio.timeout(timeouts.connect + timeouts.first_token):
            response = await client.request(
                method, url, headers=headers, content=content, timeout=httpx_timeout(timeouts)
            )
    except (httpx.HTTPError, TimeoutError) as exc:
        raise transport_error(exc, provider) from None
    if response.status_code >= 400:
        raise to_error(response)
    return response


async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    timeouts: Timeouts,
    to_error: ErrorMapper,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
) -> httpx.Response:
    """POST and wait for the status line only; the body is read later, chunk by chunk."""
    content, headers = json_body(json, headers) if json is not None else (None, headers)
    request = client.build_request(
        "POST", url, headers=headers, content=content, timeout=httpx_timeout(timeouts, read=timeouts.idle)
    )
    try:
        async with asyncio.timeout(timeouts.connect + timeouts.first_token):
            response = await client.send(request, stream=True)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise transport_error(exc, provider) from None
    if response.status_code >= 400:
        try:
            async with asyncio.timeout(timeouts.first_token):
                await response.aread()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc, provider) from None
        finally:
            await response.aclose()
        raise to_error(response)
    return response


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


async def sse_events(response: httpx.Response, timeouts: Timeouts, provider: str) -> AsyncIterator[SSEEvent]:
    """Server-sent events of an opened response; ``first_token`` until the first bytes, ``idle`` between reads.

    Lines are split from the body's chunks here, not by httpx's ``aiter_lines``: one timeout per network read
    instead of one per line (an answer that arrives in one read is one timer, not two per event), and no
    text-decoder layers. SSE is UTF-8 by definition; lines end in CRLF, LF or CR."""
    chunks = response.aiter_bytes()
    wait = timeouts.first_token
    pending = b""
    event, data = "", []
    ended = False
    while not ended:
        try:
            async with asyncio.timeout(wait):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            # An event the body ends in without its blank line (or its last line's end) is still given.
            chunk, ended = b"\n\n", True
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc, provider) from None
        wait = timeouts.idle
        lines = (pending + chunk).splitlines(keepends=True)
        # The last piece has no line end yet, or ends in a CR whose LF may come with the next read.
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if not line:
                if data:
                    sse = SSEEvent(event or "message", "\n".join(data))
                    if sse.data.strip() == "[DONE]":
                        await _read_to_end(chunks)
                    yield sse
                event, data = "", []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)


# After ``[DONE]`` the rest of the body (its last chunk marker) is read too, for at most this long: httpx closes
# the connection of a response closed before its end, and the next call would pay a new TCP (and TLS)
# handshake instead of reusing it.
DONE_TAIL_SECONDS = 0.5


async def _read_to_end(chunks: AsyncIterator[bytes]) -> None:
    try:
        async with asyncio.timeout(DONE_TAIL_SECONDS):
            async for _ in chunks:
                pass
    except (httpx.HTTPError, TimeoutError):
        pass  # the answer is complete; only the connection's reuse is lost


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def usage_dict(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> dict:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


def chat_completion(
    *,
    model: str,
    message: dict,
    finish_reason: str | None,
    usage: dict | None,
    response_id: str | None = None,
) -> dict:
    body = {
        "id": response_id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class ChunkFactory:
    """Builds the ``chat.completion.chunk`` dicts of one stream (one id, one created time)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = completion_id()
        self.created = int(time.time())

    def _chunk(self, choices: list, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def delta(self, delta: dict, finish_reason: str | None = None) -> dict:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def usage(self, usage: dict) -> dict:
        return self._chunk([], usage=usage)


# Top-level fields of a chat.completion that a stream repeats on its chunks (the first value seen is kept).
_COMPLETION_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


class CompletionAssembler:
    """One ``chat.completion`` built from the ``chat.completion.chunk`` dicts of a stream, fed in order.

    Deltas merge per choice index: text (content, reasoning, reasoning_content, refusal) is concatenated,
    lists (annotations, reasoning_details, logprobs.content) are extended, other objects merged field by
    field. Tool calls merge by their own index: id, type and function name come from the first fragment
    that has them, argument fragments are concatenated. The last finish_reason wins; a stream that ended
    without one finished normally (the adapters raise for a cut stream), so it reads as ``stop`` (or
    ``tool_calls``). Usage is the last non-empty ``usage`` of any chunk, None when the stream had none.
    """

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}
        self._choices: dict[int, _ChoiceParts] = {}
        self._usage: dict | None = None
        # Characters of generated text (answer, reasoning, tool arguments): a token estimate without usage.
        self.generated_chars = 0

    def feed(self, chunk: dict) -> None:
        for name in _COMPLETION_FIELDS:
            if chunk.get(name) is not None:
                self._fields.setdefault(name, chunk[name])
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                parts = self._choices.setdefault(choice.get("index") or 0, _ChoiceParts())
                self.generated_chars += parts.feed(choice)

    @property
    def usage(self) -> Usage | None:
        if self._usage is None:
            return None
        return Usage(int(self._usage.get("prompt_tokens") or 0), int(self._usage.get("completion_tokens") or 0))

    def result(self) -> tuple[dict, Usage | None]:
        """The completion and its usage. A stream that carried no choice at all is no answer: SERVER error."""
        if not self._choices:
            raise UpstreamError(ErrorKind.SERVER, "the stream ended without any answer")
        body = {
            "id": self._fields.get("id") or completion_id(),
            "object": "chat.completion",
            "created": self._fields.get("created") or int(time.time()),
            "model": self._fields.get("model", ""),
            "choices": [self._choices[index].choice(index) for index in sorted(self._choices)],
        }
        for name in ("system_fingerprint", "service_tier"):
            if name in self._fields:
                body[name] = self._fields[name]
        if self._usage is not None:
            body["usage"] = self._usage
        return body, self.usage


def assemble_completion(chunks: Iterable[dict]) -> tuple[dict, Usage | None]:
    """The ``chat.completion`` that a whole stream of chunks amounts to, and its usage (None if unreported)."""
    assembler = CompletionAssembler()
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.result()


class _ChoiceParts:
    """What the deltas of one choice index have said so far, kept as fragments and combined once at the end
    (joining as they come would copy a long answer over and over)."""

    def __init__(self) -> None:
        self.role: str | None = None
        self.fields: dict[str, list[Any]] = {}  # message field → its fragments in stream order
        self.tool_calls: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None
        # vLLM-based servers name the stop sequence (or token id) that ended the answer.
        self.stop_reason: str | int | None = None
        self.logprobs: list[Any] = []

    def feed(self, choice: dict) -> int:
        """Take one chunk's choice; returns the characters of generated text it added."""
        added = 0
        delta = choice.get("delta") or {}
        for key, value in delta.items():
            if value is None:
                continue
            if key == "role":
                self.role = self.role or value
            elif key == "tool_calls":
                added += self._add_tool_calls(value)
            else:
                self.fields.setdefault(key, []).append(value)
                added += len(value) if isinstance(value, str) else 0
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if choice.get("stop_reason") is not None:
            self.stop_reason = choice["stop_reason"]
        if choice.get("logprobs"):
            self.logprobs.append(choice["logprobs"])
        return added

    def _add_tool_calls(self, fragments: Any) -> int:
        added = 0
        for fragment in fragments if isinstance(fragments, list) else ():
            if not isinstance(fragment, dict):
                continue
            function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
            index = fragment.get("index")
            if index is None:
                # Servers that send no index: a fragment naming a call starts one, any other continues the last.
                starts = fragment.get("id") or function.get("name") or not self.tool_calls
                index = len(self.tool_calls) if starts else max(self.tool_calls)
            added += self.tool_calls.setdefault(index, _ToolCallParts()).add(fragment, function)
        return added

    def choice(self, index: int) -> dict:
        calls = [self.tool_calls[i].tool_call() for i in sorted(self.tool_calls)]
        fields = {key: _combined(values) for key, values in self.fields.items()}
        content = fields.pop("content", None)
        if not content:
            # OpenAI's null content beside tool calls or a refusal; an empty answer is "".
            content = None if calls or fields.get("refusal") else ""
        message: dict[str, Any] = {"role": self.role or "assistant", "content": content, **fields}
        if calls:
            message["tool_calls"] = calls
        finish_reason = self.finish_reason or ("tool_calls" if calls else "stop")
        choice = {"index": index, "message": message, "finish_reason": finish_reason,
                  "logprobs": _combined(self.logprobs)}
        if self.stop_reason is not None:
            choice["stop_reason"] = self.stop_reason
        return choice


class _ToolCallParts:
    """The fragments of one streamed tool call: id, type and name from the first that has them, the argument
    text of all of them in order, any other field (Gemini's ``extra_content``) combined."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []
        self.extra: dict[str, list[Any]] = {}
        self.function_extra: dict[str, list[Any]] = {}

    def add(self, fragment: dict, function: dict) -> int:
        self.id = self.id or fragment.get("id")
        self.type = self.type or fragment.get("type")
        self.name = self.name or function.get("name")
        for key, value in fragment.items():
            if key not in ("index", "id", "type", "function") and value is not None:
                self.extra.setdefault(key, []).append(value)
        for key, value in function.items():
            if key not in ("name", "arguments") and value is not None:
                self.function_extra.setdefault(key, []).append(value)
        arguments = function.get("arguments")
        if arguments is None:
            return 0
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self.arguments.append(text)
        return len(text)

    def tool_call(self) -> dict:
        function = {
            "name": self.name or "",
            # A call whose arguments never came takes none: "{}", what a non-streamed answer says.
            "arguments": "".join(self.arguments) or "{}",
            **{key: _combined(values) for key, values in self.function_extra.items()},
        }
        extra = {key: _combined(values) for key, values in self.extra.items()}
        return {"id": self.id or tool_call_id(), "type": self.type or "function", "function": function, **extra}


def _combined(values: list[Any]) -> Any:
    """The fragments of one field, in stream order, as one value: text joined, lists concatenated, objects
    combined field by field; text and content parts mixed (Mistral's thinking models) become one list of
    parts. Anything else: the last value. None when there is nothing."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    if all(isinstance(value, str) for value in values):
        return "".join(values)
    if all(isinstance(value, list | str) for value in values):
        parts: list = []
        for is_text, group in itertools.groupby(values, key=lambda value: isinstance(value, str)):
            run = list(group)
            parts.extend(_as_parts("".join(run)) if is_text else [part for value in run for part in value])
        return parts
    if all(isinstance(value, dict) for value in values):
        keys = dict.fromkeys(key for value in values for key in value)
        return {key: _combined([value[key] for value in values if key in value]) for key in keys}
    return values[-1]


def _as_parts(text: str) -> list:
    return [{"type": "text", "text": text}] if text else []


def text_of(content: Any) -> str:
    """The text of an OpenAI message ``content`` (string, or a list of parts of which the text ones count)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def stop_list(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def drop_params(request: dict, names: frozenset[str]) -> dict:
    return {k: v for k, v in request.items() if k not in names} if names else request


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` → (mime, base64 data); None for anything else."""
    if not url.startswith("data:"):
        return None
    header, _, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if encoding != "base64":
        return None
    return mime or "application/octet-stream", data


def encode_embedding(vector: Sequence[float], encoding_format: str | None) -> list[float] | str:
    """OpenAI's ``encoding_format``: floats, or base64 of little-endian float32 (what the openai SDK asks for)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)


def embedding_list(
    vectors: Sequence[Sequence[float]], *, model: str, encoding_format: str | None, prompt_tokens: int
) -> dict:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_embedding(vector, encoding_format)}
            for i, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def embedding_inputs(request: dict) -> list[str]:
    """OpenAI ``input`` as a list of strings; token-id inputs cannot be sent to a native API."""
    value = request.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(item, str) for item in items):
        raise UpstreamError(
            ErrorKind.BAD_REQUEST, "`input` must be a string or a non-empty list of strings for this model", status=400
        )
    return items


def rough_tokens(texts: Sequence[str]) -> int:
    """About four characters a token: for quota accounting when a provider reports no usage."""
    return sum(max(1, len(text) // 4) for text in texts if text)


def seconds_until_midnight(tz: str, now: dt.datetime | None = None) -> float:
    """Seconds until the next midnight in ``tz``: when a provider's daily quota comes back."""
    zone = zoneinfo.ZoneInfo(tz)
    local = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return max(1.0, (midnight - local).total_seconds())
