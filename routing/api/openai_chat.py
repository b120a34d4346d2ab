"""POST /v1/chat/completions: the reference dialect, an OpenAI chat body in and out almost as it is."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from providers.adapters.base import Usage
from routing.errors import GatewayError

from . import exchange
from .dialects import Dialect

router = Router(tags=["chat"])


class ChatCompletionRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise PydanticCustomError(
                "one_choice",
                "only n=1 is supported: freellm returns one choice per request, since a failover to another "
                "provider could not promise several; send several requests instead",
            )
        return n


@router.post("/chat/completions", summary="Create a chat completion (streaming or not)")
async def chat_completions(request: HttpRequest, payload: ChatCompletionRequest):
    body = payload.to_upstream()
    stream = bool(body.get("stream"))
    result = await exchange.chat(request, body, dialect=Dialect.OPENAI, stream=stream)
    if not stream:
        return exchange.with_trail(exchange.json_response(result.completion), result)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return exchange.stream_response(request, result, OpenAIChatEncoder(include_usage=include_usage))


class OpenAIChatEncoder:
    """chat.completion.chunk events as they come; `data: [DONE]` only after a complete answer."""

    keepalive_seconds = None

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict) -> bytes:
        if chunk.get("usage") and not self.include_usage:
            # A usage-only chunk the client did not ask for is dropped; on a content chunk usage is cut.
            if not chunk.get("choices"):
                return b""
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        return exchange.sse(chunk)

    def finish(self, usage: Usage) -> bytes:
        return b"data: [DONE]\n\n"

    def fail(self, error: GatewayError) -> bytes:
        return exchange.sse(error.payload())

    def keepalive(self) -> bytes:
        return b""
