"""The contract between the router and a provider adapter. No Django here.

An adapter turns an OpenAI-shaped request into the provider's HTTP call and the answer back into OpenAI
shape. Every failure is raised as ``UpstreamError`` with a ``kind`` the router acts on, so a 429 from
Gemini and a 429 from Groq feed failover and quota learning the same way.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx


@dataclass(frozen=True)
class Target:
    """One upstream route: a provider, one of its models and one of its keys."""

    provider: str  # provider slug
    base_url: str
    model: str  # the provider's own model id
    api_key: str | None  # decrypted secret; never logged, never put in an error message
    key_label: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    drop_params: frozenset[str] = frozenset()

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"Target({self.provider}/{self.model} key={self.key_label!r})"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 30.0  # until response headers / the first chunk (whole answer when not streaming)
    idle: float = 20.0  # longest gap between two stream chunks


class ErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: cool the route down, fail over
    SERVER = "server_error"  # 5xx: fail over, escalate the cooldown
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"  # 401/402/403: the key is bad
    NOT_FOUND = "model_not_found"  # 404: rule this model out for the request
    CONTEXT_LENGTH = "context_length"  # prompt too long for this model: rule it out for the request
    BAD_REQUEST = "bad_request"  # the request itself is wrong: back to the client, no failover
    BLOCKED = "content_blocked"  # safety filter refused: back to the client
    EMPTY = "empty_answer"  # no content, no tool call and no reasoning: a broken answer, fail over like a 5xx

    @property
    def fails_over(self) -> bool:
        return self not in (ErrorKind.BAD_REQUEST, ErrorKind.BLOCKED)


class UpstreamError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        spent: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        # Tokens the provider used before the call broke (part of an answer had come): counted in the quota.
        self.spent = spent


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class UpstreamResponse:
    body: Any  # OpenAI-shaped JSON (dict), or str for text transcriptions
    usage: Usage | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # for learning rate limits


@dataclass
class BinaryResponse:
    content: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


class UpstreamStream:
    """An opened streaming response: status already checked, nothing sent to the client yet.

    ``chunks()`` yields OpenAI ``chat.completion.chunk`` dicts; the adapter always asks upstream for usage
    and yields it as a final chunk with ``usage`` and empty ``choices`` when the provider gives one.
    A failure mid-stream raises ``UpstreamError``; the idle timeout applies between chunks.
    """

    def __init__(self, headers: Mapping[str, str], chunks: AsyncIterator[dict], close) -> None:
        self.headers = dict(headers)
        self._chunks = chunks
        self._close = close

    def chunks(self) -> AsyncIterator[dict]:
        return self._chunks

    async def aclose(self) -> None:
        await self._close()


class Adapter:
    """Base class; subclasses override what their provider supports. Unsupported → BAD_REQUEST."""

    name = "base"

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        raise _unsupported(self, "chat")

    async def chat_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        raise _unsupported(self, "streaming chat")

    async def fim_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        """Fill in the middle: ``request`` is ``{"prompt", "suffix"?, "max_tokens"?, "temperature"?, "top_p"?,
        "stop"?}``; the stream yields ``chat.completion.chunk`` dicts whose content is the missing middle."""
        raise _unsupported(self, "fill-in-the-middle completions")

    async def embeddings(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        raise _unsupported(self, "embeddings")

    async def images(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        raise _unsupported(self, "image generation")

    async def transcription(
        self, client: httpx.AsyncClient, target: Target, file: tuple[str, bytes, str], fields: dict, timeouts: Timeouts
    ) -> UpstreamResponse:
        raise _unsupported(self, "audio transcription")

    async def speech(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> BinaryResponse:
        raise _unsupported(self, "speech")


def _unsupported(adapter: Adapter, what: str) -> UpstreamError:
    return UpstreamError(ErrorKind.NOT_FOUND, f"the {adapter.name} adapter does not support {what}")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or retry-after-ms; None if absent."""
    lower = {k.lower(): v for k, v in headers.items()}
    if ms := lower.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
