"""The emulator's behaviour engine: what an upstream does with a call, driven by the API key, and a recorder.

Key grammar
-----------
The API key a client sends (``Authorization: Bearer``, ``x-goog-api-key`` for Gemini, whatever the wire
format uses) is ``<name>[;directive...]``. The name is free text (it tells keys apart); the directives are:

``429`` / ``429=<seconds>``
    always rate-limited: 429 with ``Retry-After`` (default 7 s).
``500`` / ``502`` / ``503``
    always that server error.
``401`` / ``403``
    always that auth error.
``hang``
    never answers; the handler waits until the client gives up (disconnects) and records that.
``fail=N:STATUS``
    the first N calls with this key fail with STATUS (429s carry ``Retry-After: 1``), then it succeeds.
``every=N:STATUS``
    every Nth call with this key fails with STATUS (default 500): a flaky upstream that the breaker, which
    opens only on consecutive failures, never takes out.
``drop=N``
    a stream ends abruptly after N content chunks: the connection is closed without the final events.
``midfail=N``
    a stream sends N content chunks, then an in-band error event (HTTP status already 200), then ends.
``badchunk=N``
    (OpenAI wire) a stream sends N content chunks, then a chunk that is valid JSON of the wrong type
    (``"delta": {"content": 5}``), then goes on as if nothing happened.
``stall=N``
    a stream sends N frames (the role frame counts), then goes silent without closing (until the client leaves).
``slow=SECONDS``
    delay before the answer (before the status line, so it counts against the client's first-byte timeout).
``gap=SECONDS``
    delay between two stream chunks.
``rpm=N`` / ``tpm=N``
    limits per key+model in a sliding window (``Engine.window``, 60 s): past them → 429 with Retry-After and
    Groq-style ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers, which are also sent on every
    successful answer while a limit is set. The error message mirrors Groq's "Rate limit reached for model
    `m` ... Limit 30, Used 30, Requested 1 ...".
``ctx=N``
    400 with code ``context_length_exceeded`` when the estimated prompt tokens exceed N.
``think=N``
    a stream starts with N reasoning chunks (``delta.reasoning``, as Groq and OpenRouter send for gpt-oss)
    before the content; ``gap`` paces them like any other chunk.
``echo``
    error messages quote the key back, as some providers do (to test that the gateway never passes it on).
    ``echo=partial`` quotes it less two characters at each end (as "Incorrect API key: sk-ab…" texts do);
    ``echo=prompt`` quotes the last user message (an upstream repeating what the client sent).
``textcall=STYLE``
    (OpenAI wire) a tool call is written as text in the answer instead of ``tool_calls``, the way free models
    do: ``hermes`` ``<tool_call>{"name", "arguments"}</tool_call>``, ``function`` ``<function=name>{...}
    </function>``, ``params`` Qwen3-Coder's ``<tool_call><function=name><parameter=k>v</parameter>...``,
    ``kimi`` ``<|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{...}<|tool_call_end|>``,
    ``deepseek`` ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>name`` + a fenced JSON block, ``json`` a bare
    ``{"name", "arguments"}`` object, ``args`` the bare arguments object. Text may come before it
    (``textcall=hermes:lead`` adds "I will call the tool.").
``doubleargs``
    (OpenAI wire) a real tool call's ``arguments`` are JSON-encoded twice (a JSON string holding the object).
``thinktag``
    (OpenAI wire) the answer opens with an inline ``<think>…</think>`` block, as DeepSeek-R1 and Qwen3 write.
``empty``
    (OpenAI wire) the answer has no content, no tool call and no reasoning (status 200, finish ``stop``).

No key at all → 401, except under a provider path segment starting with ``keyless`` (a keyless provider
such as Pollinations), where a call without a key behaves like a plain succeeding key. A model id starting with ``missing`` → 404 ``model_not_found``.
Unknown directives are ignored, so a key is never rejected for its spelling.
Precedence: no key, 401/403, hang, fail=N, every=N, 429, 5xx, missing model, ctx, rpm/tpm; ``slow`` delays whatever
the answer is (errors included); ``gap`` and ``drop`` shape a successful stream.

How a route handler uses the engine
-----------------------------------
::

    decision = await engine.admit(request, provider=provider, key=key, model=model, body=body,
                                  est_tokens=prompt_tokens)
    if decision.action == ERROR:    # render decision.error in the wire format, with decision.headers
    if decision.action == GONE:     # the client went away during hang/slow: return any response
    # PROCEED: build the answer; add decision.headers; for a stream use
    return engine.stream(decision, content_frames, tail_frames,   # honours drop=, gap= and midfail=
                         error_frames=[in_band_error_event])
    # for a plain answer call decision.finish(status) (or engine.json(decision, body) does it)

Every call to ``admit`` appends a ``CallRecord`` to ``engine.calls``; its ``status``, ``disconnected``,
``chunks_sent`` and ``dropped`` fields are filled in as the answer goes out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .content import last_user_text

PROCEED = "proceed"
ERROR = "error"
GONE = "gone"

DEFAULT_RETRY_AFTER = 7.0
# How often a waiting handler checks whether the client is still there.
_POLL = 0.05
# A hang ends on its own after this long, so a forgotten client never keeps the server from stopping.
_HANG_LIMIT = 600.0


@dataclass(frozen=True)
class KeySpec:
    """A parsed emulator key."""

    raw: str
    name: str
    always_status: int | None = None
    retry_after: float = DEFAULT_RETRY_AFTER
    hang: bool = False
    fail_count: int = 0
    fail_status: int = 500
    every: int = 0
    every_status: int = 500
    drop_after: int | None = None
    midfail_after: int | None = None
    badchunk_after: int | None = None
    stall_after: int | None = None
    slow: float = 0.0
    gap: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    ctx: int | None = None
    echo: bool = False
    echo_mode: str = ""  # "", "partial" or "prompt"
    think: int = 0
    textcall: str | None = None
    textcall_lead: bool = False
    doubleargs: bool = False
    thinktag: bool = False
    empty: bool = False


def parse_key(raw: str) -> KeySpec:
    name, *directives = [part.strip() for part in raw.split(";")]
    spec: dict[str, Any] = {}
    for directive in directives:
        word, _, value = directive.partition("=")
        word = word.strip().lower()
        try:
            if word == "429":
                spec["always_status"] = 429
                if value:
                    spec["retry_after"] = float(value)
            elif word in ("401", "403", "500", "502", "503"):
                spec["always_status"] = int(word)
            elif word == "hang":
                spec["hang"] = True
            elif word == "echo":
                spec["echo"] = True
                spec["echo_mode"] = value.strip().lower()
            elif word in ("doubleargs", "thinktag", "empty"):
                spec[word] = True
            elif word == "textcall":
                style, _, lead = value.partition(":")
                spec["textcall"] = style or "hermes"
                spec["textcall_lead"] = lead == "lead"
            elif word == "fail":
                count, _, status = value.partition(":")
                spec["fail_count"] = int(count)
                spec["fail_status"] = int(status or 500)
            elif word == "every":
                count, _, status = value.partition(":")
                spec["every"] = int(count)
                spec["every_status"] = int(status or 500)
            elif word == "drop":
                spec["drop_after"] = int(value)
            elif word == "midfail":
                spec["midfail_after"] = int(value)
            elif word == "badchunk":
                spec["badchunk_after"] = int(value)
            elif word == "stall":
                spec["stall_after"] = int(value)
            elif word == "slow":
                spec["slow"] = float(value)
            elif word == "gap":
                spec["gap"] = float(value)
            elif word in ("rpm", "tpm", "ctx", "think"):
                spec[word] = int(value)
        except ValueError:
            continue
    return KeySpec(raw=raw, name=name, **spec)


@dataclass
class CallRecord:
    provider: str
    path: str
    method: str
    key: str | None
    model: str | None
    body: Any  # parsed JSON body, or None
    form: dict[str, Any] | None  # multipart/form fields (files as {"filename", "size", "content_type"})
    headers: dict[str, str]  # lower-cased request headers
    time: float  # wall clock at arrival
    stream: bool = False
    status: int | None = None  # status sent; None while the answer has not gone out
    chunks_sent: int = 0  # stream frames written
    dropped: bool = False  # the emulator cut the stream on purpose (drop=N)
    disconnected: bool = False  # the client went away before the answer was complete
    completed: bool = False  # the whole answer went out
    ended: float | None = None  # wall clock when the answer ended
    client: tuple[str, int] | None = None  # the caller's address and port: one port, one reused connection

    @property
    def key_name(self) -> str | None:
        return self.key.split(";", 1)[0] if self.key is not None else None


@dataclass
class ErrorReply:
    status: int
    message: str
    type: str
    code: str | None = None
    retry_after: float | None = None


@dataclass
class Decision:
    action: str
    record: CallRecord
    spec: KeySpec | None
    error: ErrorReply | None = None
    headers: dict[str, str] = field(default_factory=dict)  # send these with the answer, error or not
    request: Request | None = None

    @property
    def drop_after(self) -> int | None:
        return self.spec.drop_after if self.spec else None

    @property
    def midfail_after(self) -> int | None:
        return self.spec.midfail_after if self.spec else None

    @property
    def gap(self) -> float:
        return self.spec.gap if self.spec else 0.0

    def finish(self, status: int, *, completed: bool = True) -> None:
        self.record.status = status
        self.record.completed = completed
        self.record.ended = time.time()


class DropConnection(Exception):
    """Raised inside a stream to make uvicorn close the socket mid-body (the drop=N behaviour)."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, DropConnection):
                return False
            exc = exc.__cause__ or exc.__context__ or (
                exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else None
            )
        return True


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def format_reset(seconds: float) -> str:
    """Groq's reset format: ``7.66s``, ``2m59.56s``."""
    seconds = max(0.0, seconds)
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.2f}s" if minutes else f"{rest:.2f}s"


class Engine:
    """Shared state of one emulator: call records, fail counters and rate windows. Thread-safe."""

    def __init__(self, *, window: float = 60.0) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []
        self._attempts: dict[str, int] = {}
        # (key, model) → deque of (monotonic time, tokens) of admitted calls
        self._usage: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self.closing = False
        # provider → model ids listed by GET .../models (tests may set it; a default list otherwise)
        self.models: dict[str, list[str]] = {}

    # -- recorder ---------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    def calls_for(self, *, key: str | None = None, name: str | None = None, provider: str | None = None,
                  path: str | None = None) -> list[CallRecord]:
        """Records matching all given filters; ``key`` is the full key, ``name`` its part before ``;``;
        ``path`` matches the end of the request path (e.g. ``"/chat/completions"``)."""
        return [
            call
            for call in self.calls
            if (key is None or call.key == key)
            and (name is None or call.key_name == name)
            and (provider is None or call.provider == provider)
            and (path is None or call.path.endswith(path))
        ]

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._attempts.clear()
            self._usage.clear()
            self.models.clear()

    def record(self, request: Request, *, provider: str, key: str | None, model: str | None, body: Any,
               form: dict[str, Any] | None = None, stream: bool = False) -> CallRecord:
        call = CallRecord(
            provider=provider,
            path=request.url.path,
            method=request.method,
            key=key,
            model=model,
            body=body,
            form=form,
            headers={k.lower(): v for k, v in request.headers.items()},
            time=time.time(),
            stream=stream,
            client=(request.client.host, request.client.port) if request.client else None,
        )
        with self._lock:
            self._calls.append(call)
        return call

    # -- admission --------------------------------------------------------------------------------------

    async def admit(
        self,
        request: Request,
        *,
        provider: str,
        key: str | None,
        model: str | None,
        body: Any = None,
        form: dict[str, Any] | None = None,
        est_tokens: int = 0,
        stream: bool = False,
    ) -> Decision:
        """Record the call and decide its fate from the key. Call this first in every route handler.

        Waits out ``slow=`` and ``hang`` itself (returning ``GONE`` if the client leaves meanwhile).
        ``est_tokens`` is the estimated prompt size, for ``ctx=`` and ``tpm=``.
        """
        record = self.record(request, provider=provider, key=key, model=model, body=body, form=form,
                             stream=stream)
        spec = parse_key(key) if key else (parse_key("anonymous") if provider.startswith("keyless") else None)
        decision = self._decide(record, spec, model, est_tokens)
        decision.request = request
        delay = _HANG_LIMIT if spec and spec.hang else (spec.slow if spec else 0.0)
        if delay and await self.wait(request, delay):
            record.disconnected = True
            decision.finish(499, completed=False)
            return Decision(GONE, record, spec, headers=decision.headers, request=request)
        if decision.action == ERROR:
            decision.finish(decision.error.status)
        return decision

    def _decide(self, record: CallRecord, spec: KeySpec | None, model: str | None, est_tokens: int) -> Decision:
        def error(status: int, message: str, type_: str, code: str | None = None,
                  retry_after: float | None = None, headers: dict[str, str] | None = None) -> Decision:
            headers = dict(headers or {})
            if spec is not None and spec.echo:
                if spec.echo_mode == "partial":
                    message = f"{message} (key: {spec.raw[2:-2]})"
                elif spec.echo_mode == "prompt":
                    body = record.body if isinstance(record.body, dict) else {}
                    message = f"{message} (you said: {last_user_text(body.get('messages') or [])})"
                else:
                    message = f"{message} (key: {spec.raw})"
            if retry_after is not None:
                headers["retry-after"] = _seconds_header(retry_after)
            return Decision(ERROR, record, spec, ErrorReply(status, message, type_, code, retry_after), headers)

        if spec is None:
            return error(401, "Missing API key.", "invalid_request_error", "invalid_api_key")
        if spec.always_status in (401, 403):
            return error(spec.always_status, "Invalid API key provided.", "invalid_request_error",
                         "invalid_api_key")
        if spec.hang:
            return Decision(PROCEED, record, spec)
        with self._lock:
            attempt = self._attempts.get(spec.raw, 0) + 1
            self._attempts[spec.raw] = attempt
        if attempt <= spec.fail_count:
            return self._status_error(error, spec.fail_status, retry_after=1.0, model=model)
        if spec.every and attempt % spec.every == 0:
            return self._status_error(error, spec.every_status, retry_after=1.0, model=model)
        if spec.always_status is not None:
            return self._status_error(error, spec.always_status, retry_after=spec.retry_after, model=model)
        if model and model.startswith("missing"):
            return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                         "invalid_request_error", "model_not_found")
        if spec.ctx is not None and est_tokens > spec.ctx:
            return error(
                400,
                f"This model's maximum context length is {spec.ctx} tokens. However, your messages resulted "
                f"in {est_tokens} tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        if spec.rpm is None and spec.tpm is None:
            return Decision(PROCEED, record, spec)
        return self._rate_limit(error, record, spec, model or "", est_tokens)

    def _status_error(self, error, status: int, *, retry_after: float, model: str | None) -> Decision:
        if status == 429:
            return error(429, f"Rate limit reached for model `{model}`. Please try again later.", "requests",
                         "rate_limit_exceeded", retry_after=retry_after)
        if status in (401, 403):
            return error(status, "Invalid API key provided.", "invalid_request_error", "invalid_api_key")
        if status >= 500:
            return error(status, f"The server had an error while processing your request ({status}).",
                         "server_error", None)
        return error(status, f"Emulated error {status}.", "invalid_request_error", None)

    def _rate_limit(self, error, record: CallRecord, spec: KeySpec, model: str, est_tokens: int) -> Decision:
        now = time.monotonic()
        requested = max(1, est_tokens)
        with self._lock:
            window = self._usage.setdefault((spec.raw, model), deque())
            while window and window[0][0] <= now - self.window:
                window.popleft()
            used_requests = len(window)
            used_tokens = sum(tokens for _, tokens in window)
            reset_requests = (window[0][0] + self.window - now) if window else 0.0
            over_requests = spec.rpm is not None and used_requests + 1 > spec.rpm
            over_tokens = spec.tpm is not None and used_tokens + requested > spec.tpm
            if not (over_requests or over_tokens):
                window.append((now, requested))
                used_requests += 1
                used_tokens += requested
                reset_requests = window[0][0] + self.window - now
            reset_tokens = self._tokens_reset(window, spec.tpm, requested if over_tokens else 0, now)
        headers: dict[str, str] = {}
        if spec.rpm is not None:
            headers |= {
                "x-ratelimit-limit-requests": str(spec.rpm),
                "x-ratelimit-remaining-requests": str(max(0, spec.rpm - used_requests)),
                "x-ratelimit-reset-requests": format_reset(reset_requests),
            }
        if spec.tpm is not None:
            headers |= {
                "x-ratelimit-limit-tokens": str(spec.tpm),
                "x-ratelimit-remaining-tokens": str(max(0, spec.tpm - used_tokens)),
                "x-ratelimit-reset-tokens": format_reset(reset_tokens),
            }
        if over_requests:
            wait = max(0.01, reset_requests)
            return error(
                429,
                f"Rate limit reached for model `{model}` in organization `org_emulator` on requests per minute "
                f"(RPM): Limit {spec.rpm}, Used {used_requests}, Requested 1. Please try again in "
                f"{format_reset(wait)}. Visit https://console.groq.com/docs/rate-limits for more information.",
                "requests",
                "rate_limit_exceeded",
                retry_after=wait,
                headers=headers,
            )
        if over_tokens:
            wait = max(0.01, reset_tokens)
            return error(
                429,
                f"Rate limit reached for model `{model}` in organization `org_emulator` on tokens per minute "
                f"(TPM): Limit {spec.tpm}, Used {used_tokens}, Requested {requested}. Please try again in "
                f"{format_reset(wait)}. Visit https://console.groq.com/docs/rate-limits for more information.",
                "tokens",
                "rate_limit_exceeded",
                retry_after=wait,
                headers=headers,
            )
        return Decision(PROCEED, record, spec, headers=headers)

    def _tokens_reset(self, window: deque[tuple[float, int]], tpm: int | None, requested: int, now: float) -> float:
        """Seconds until the window has room for ``requested`` more tokens (with 0 requested: until the
        oldest entry leaves, as for requests)."""
        if tpm is None or not window:
            return 0.0
        used = sum(tokens for _, tokens in window)
        for stamp, tokens in window:
            used -= tokens
            if used + requested <= tpm:
                return max(0.0, stamp + self.window - now)
        return max(0.0, window[-1][0] + self.window - now)

    # -- answering --------------------------------------------------------------------------------------

    async def wait(self, request: Request, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the client disconnects (or the server is closing)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.closing:
                return True
            if await request.is_disconnected():
                return True
            await asyncio.sleep(min(_POLL, left))
        return False

    def json(self, decision: Decision, body: Any, status: int = 200,
             headers: Mapping[str, str] | None = None) -> JSONResponse:
        """A plain JSON answer carrying the decision's headers; records the status."""
        decision.finish(status)
        return JSONResponse(body, status_code=status, headers={**decision.headers, **(headers or {})})

    def response(self, decision: Decision, content: bytes | str, media_type: str, status: int = 200,
                 headers: Mapping[str, str] | None = None) -> Response:
        decision.finish(status)
        return Response(content, status_code=status, media_type=media_type,
                        headers={**decision.headers, **(headers or {})})

    def stream(
        self,
        decision: Decision,
        content_frames: Iterable[bytes],
        tail_frames: Iterable[bytes] = (),
        *,
        error_frames: Iterable[bytes] = (),
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
    ) -> StreamingResponse:
        """Stream pre-encoded frames: the content frames, then the tail (final events, usage, [DONE]).

        ``gap=`` sleeps between frames; ``drop=N`` closes the socket after N content frames, before the tail;
        ``midfail=N`` sends ``error_frames`` (the wire format's in-band error event) instead of the rest.
        A client that leaves early is recorded as ``disconnected``.
        """
        record = decision.record
        content = list(content_frames)
        tail = list(tail_frames)
        drop_after = decision.drop_after
        midfail_after = decision.midfail_after
        stall_after = decision.spec.stall_after if decision.spec else None
        errors = list(error_frames)
        gap = decision.gap

        async def frames():
            finished = False
            try:
                for index, frame in enumerate(content):
                    if drop_after is not None and index >= drop_after:
                        break
                    if midfail_after is not None and index >= midfail_after:
                        break
                    if index and gap:
                        await asyncio.sleep(gap)
                    if index == stall_after:
                        await asyncio.sleep(3600)  # cancelled when the client leaves
                    yield frame
                    record.chunks_sent += 1
                if drop_after is not None:
                    record.dropped = True
                    record.ended = time.time()
                    raise DropConnection("the emulator drops the stream (drop=N)")
                if midfail_after is not None:
                    for frame in errors:
                        yield frame
                        record.chunks_sent += 1
                    finished = True
                    record.ended = time.time()
                    return
                for frame in tail:
                    yield frame
                    record.chunks_sent += 1
                finished = True
                record.completed = True
                record.ended = time.time()
            finally:
                # Cancelled by Starlette when the client disconnects, or closed before the end.
                if not finished and not record.dropped:
                    record.disconnected = True
                    record.ended = time.time()

        record.status = 200
        return StreamingResponse(frames(), media_type=media_type, headers={**decision.headers, **(headers or {})})


def _seconds_header(seconds: float) -> str:
    # Retry-After is an integer per RFC 9110; round up so a client never retries too early.
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)
