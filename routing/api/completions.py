"""POST /v1/completions: OpenAI's legacy text completions (editor autocomplete, ghost text) over the exchange.

``prompt`` (+ ``suffix`` to fill in the middle) goes to models with a fill-in-the-middle endpoint natively
(``/fim/completions``, Mistral's codestral: the ``fim`` capability) and to every other model as a chat prompt
asking for the continuation, or for the text between prefix and suffix. Routing, failover, quotas, the trail
and the request log are the exchange's; the answer comes back as a ``text_completion`` (streamed as
``text_completion`` chunks ending with ``data: [DONE]``). One prompt per request and no ``echo``, ``logprobs``
or ``best_of``: those need the raw model, which a chat upstream does not expose.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Router
from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from providers.adapters.base import Adapter, Target, Timeouts, UpstreamStream, Usage
from routing.config import get_routing_config
from routing.errors import GatewayError
from routing.http import get_client

from . import exchange
from .dialects import Dialect, register_dialect

router = Router(tags=["completions"])
register_dialect(Dialect.COMPLETIONS, path_prefixes=("/v1/completions",))

CONTINUE_INSTRUCTION = (
    "You are a text completion engine. The user message is the beginning of a document. Reply with only "
    "its continuation, starting exactly where it stops: no preamble, no explanation, no repetition of the "
    "beginning, no Markdown fence around it."
)
FILL_INSTRUCTION = (
    "You are a fill-in-the-middle engine. The user message holds the PREFIX and the SUFFIX of a document. "
    "Reply with only the text that belongs between them, exactly as it is to be inserted: no preamble, no "
    "explanation, no repetition of the prefix or the suffix, no Markdown fence around it."
)
# Fields of a completions request that mean something else (or nothing) to a chat upstream.
_COMPLETION_ONLY = ("model", "prompt", "suffix", "echo", "best_of", "logprobs", "n", "stream", "stream_options")
# What a fill-in-the-middle endpoint takes besides prompt and suffix (Mistral's names).
_FIM_FIELDS = ("max_tokens", "temperature", "top_p", "stop")


class CompletionRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    prompt: str | list[Any]
    suffix: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    echo: StrictBool | None = False
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    best_of: int | None = None
    logprobs: int | None = None

    @field_validator("prompt")
    @classmethod
    def _one_text_prompt(cls, prompt: str | list[Any]) -> str | list[Any]:
        if isinstance(prompt, list) and (len(prompt) != 1 or not isinstance(prompt[0], str)):
            raise PydanticCustomError(
                "one_prompt",
                "must be a string or a list of one string: freellm completes one text prompt per request "
                "(token arrays are not supported; send the text)",
            )
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool | None) -> bool | None:
        if echo:
            raise PydanticCustomError(
                "no_echo",
                "echo=true is not supported: completions are served by chat models, which do not return the "
                "prompt; prepend it yourself",
            )
        return echo

    @field_validator("n", "best_of")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise PydanticCustomError("one_choice", "only 1 is supported: freellm returns one choice per request")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise PydanticCustomError("no_logprobs", "logprobs are not supported by the chat upstreams that serve "
                                                     "completions")
        return value


@router.post("/completions", summary="Create a (legacy) text completion, with fill in the middle")
async def completions(request: HttpRequest, payload: CompletionRequest):
    sent = payload.to_upstream()
    prompt = sent["prompt"][0] if isinstance(sent["prompt"], list) else sent["prompt"]
    suffix = sent.get("suffix") or None
    if not prompt and not suffix:
        raise GatewayError(400, "prompt must not be empty", param="prompt", code="invalid_value")
    stream = bool(sent.get("stream"))
    body = chat_body(sent, prompt, suffix)
    opener = fim_opener(await get_routing_config(), fim_body(sent, prompt, suffix))
    # Each autocomplete prompt differs: a session per prompt would be noise. Sticky only when the client
    # names its session (X-Session-Id or `user`).
    result = await exchange.chat(request, body, dialect=Dialect.COMPLETIONS, stream=stream, opener=opener,
                                 conversation_sessions=False)
    if not stream:
        return exchange.with_trail(JsonResponse(text_completion(result.completion)), result)
    include_usage = bool((sent.get("stream_options") or {}).get("include_usage"))
    return exchange.stream_response(request, result, TextCompletionEncoder(include_usage=include_usage))


# --- in: the internal chat request, and the native fill-in-the-middle request ------------------------


def chat_body(sent: dict[str, Any], prompt: str, suffix: str | None) -> dict[str, Any]:
    """The completions request as a chat request asking for the continuation (or the missing middle)."""
    if suffix:
        messages = [{"role": "system", "content": FILL_INSTRUCTION},
                    {"role": "user", "content": f"<PREFIX>{prompt}</PREFIX><SUFFIX>{suffix}</SUFFIX>"}]
    else:
        messages = [{"role": "system", "content": CONTINUE_INSTRUCTION}, {"role": "user", "content": prompt}]
    passed = {k: v for k, v in sent.items() if k not in _COMPLETION_ONLY}
    return {"model": sent["model"], "messages": messages, **passed}


def fim_body(sent: dict[str, Any], prompt: str, suffix: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt, **{k: sent[k] for k in _FIM_FIELDS if sent.get(k) is not None}}
    if suffix:
        body["suffix"] = suffix
    return body


def fim_opener(cfg, fim_request: dict[str, Any]) -> exchange.UpstreamOpener:
    """Models with a fill-in-the-middle endpoint get the request natively; the others the chat prompt."""

    async def open_stream(adapter: Adapter, target: Target, body: dict[str, Any],
                          timeouts: Timeouts) -> UpstreamStream:
        model = cfg.by_name.get(f"{target.provider}/{target.model}")
        if model is not None and model.supports_fim:
            return await adapter.fim_stream(get_client(target.proxy), target, fim_request, timeouts)
        return await exchange.open_chat_stream(adapter, target, body, timeouts)

    return open_stream


# --- out: text_completion ------------------------------------------------------------------------------


def completion_id(chat_id: str | None) -> str:
    return "cmpl-" + (chat_id or "").removeprefix("chatcmpl-").removeprefix("cmpl-")


def _finish_reason(reason: str | None) -> str | None:
    # A completion knows stop, length and content_filter; anything else ended normally.
    return reason if reason in (None, "stop", "length", "content_filter") else "stop"


def text_completion(completion: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for choice in completion.get("choices") or ():
        content = (choice.get("message") or {}).get("content")
        choices.append({"text": content if isinstance(content, str) else "", "index": choice.get("index", 0),
                        "logprobs": None, "finish_reason": _finish_reason(choice.get("finish_reason")) or "stop"})
    answer = {"id": completion_id(completion.get("id")), "object": "text_completion",
              "created": completion.get("created"), "model": completion.get("model", ""), "choices": choices}
    if completion.get("usage"):
        answer["usage"] = completion["usage"]
    return answer


class TextCompletionEncoder:
    """Each chat chunk with text (or the finish) as a ``text_completion`` chunk; ``data: [DONE]`` at the end."""

    keepalive_seconds = None

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict) -> bytes:
        envelope = {"id": completion_id(chunk.get("id")), "object": "text_completion",
                    "created": chunk.get("created"), "model": chunk.get("model", "")}
        choices = []
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            finish = _finish_reason(choice.get("finish_reason"))
            if text or finish:
                choices.append({"text": text or "", "index": choice.get("index", 0), "logprobs": None,
                                "finish_reason": finish})
        usage = chunk.get("usage") if self.include_usage else None
        if not choices and not usage:
            return b""
        return exchange.sse({**envelope, "choices": choices, **({"usage": usage} if usage else {})})

    def finish(self, usage: Usage) -> bytes:
        return b"data: [DONE]\n\n"

    def fail(self, error: GatewayError) -> bytes:
        return exchange.sse(error.payload())

    def keepalive(self) -> bytes:
        return b""
