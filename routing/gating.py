"""Capability gating: which models of a chain can serve a chat request at all, decided before any call.

A request with images goes only to vision models, with tools only to tool-capable ones, with a JSON
``response_format`` only to models that honour it, and only to models whose context window holds the
estimated prompt (plus the completion the client asked for). Unknown context windows are not held against
a model: the upstream's own context-length error still fails over.

When nothing can serve: 400 ``context_length_exceeded`` (OpenAI's code) if every model's window is too small,
else 422 ``no_capable_model`` (vision, tools, JSON mode, or a mix).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from routing.errors import GatewayError
from routing.tokens import estimate_request_tokens


class Capabilities(Protocol):
    """What gating reads of a model (routing.config.ModelInfo has it)."""

    name: str
    context_window: int | None
    supports_tools: bool
    supports_vision: bool
    supports_json: bool


@dataclass(frozen=True)
class Requirements:
    prompt_tokens: int
    completion_tokens: int  # max_tokens / max_completion_tokens as asked, 0 when the client left it open
    needs_vision: bool
    needs_tools: bool
    needs_json: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def describe(self) -> str:
        """Human summary for error messages, e.g. '~12,400 tokens, images, tools'."""
        parts = [f"~{self.total_tokens:,} tokens"]
        if self.needs_vision:
            parts.append("images")
        if self.needs_tools:
            parts.append("tools")
        if self.needs_json:
            parts.append("JSON response_format")
        return ", ".join(parts)


_JSON_FORMATS = ("json_object", "json_schema")
_IMAGE_PART_TYPES = ("image_url", "input_image", "image")


def chat_requirements(body: Mapping[str, Any]) -> Requirements:
    messages = body.get("messages") or []
    response_format = body.get("response_format")
    format_type = response_format.get("type") if isinstance(response_format, Mapping) else None
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return Requirements(
        # Tools and JSON schemas are sent along with the messages and take their share of the window.
        prompt_tokens=estimate_request_tokens(body, output_reserve=0),
        completion_tokens=completion if isinstance(completion, int) and completion > 0 else 0,
        needs_vision=any(_has_image(m) for m in messages if isinstance(m, Mapping)),
        needs_tools=bool(body.get("tools") or body.get("functions")),
        needs_json=format_type in _JSON_FORMATS,
    )


def _has_image(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    if not isinstance(content, list):
        return False
    return any(isinstance(part, Mapping) and part.get("type") in _IMAGE_PART_TYPES for part in content)


_CONTEXT_REASON = "context window"


def model_can_serve(model: Capabilities, req: Requirements) -> str | None:
    """None when the model can take the request, else why not (short, shown in trails and errors)."""
    if req.needs_vision and not model.supports_vision:
        return "no vision"
    if req.needs_tools and not model.supports_tools:
        return "no tool calling"
    if req.needs_json and not model.supports_json:
        return "no JSON mode"
    if too_small(model, req):
        return f"{_CONTEXT_REASON} {model.context_window:,} < ~{req.total_tokens:,} tokens"
    return None


def too_small(model: Capabilities, req: Requirements) -> bool:
    """The model's (known) context window cannot hold the request."""
    return bool(model.context_window) and req.total_tokens > model.context_window


def is_context_reason(reason: str) -> bool:
    """Whether a reason from model_can_serve is the context window (a 400 for the client, not a 422)."""
    return reason.startswith(_CONTEXT_REASON)


def context_overflow_error(requested: str, need_tokens: int, windows: Mapping[str, int | None]) -> GatewayError:
    """The 400 of a request no model's context window holds, in OpenAI's shape and code, so clients that key
    on ``context_length_exceeded`` (LangChain, LiteLLM, coding agents) trim the conversation and retry.

    ``windows``: each model checked → its context window (None when not configured)."""
    known = {name: window for name, window in windows.items() if window}
    checked = f"{len(windows)} model{'s' if len(windows) != 1 else ''} checked for '{requested}'"
    if known:
        name, largest = max(known.items(), key=lambda item: item[1])
        largest_text = f"the largest context window of the {checked} is {largest:,} tokens ({name})"
    else:
        largest_text = f"none of the {checked} has a configured context window, and each refused it as too long"
    return GatewayError(
        400,
        f"This request (estimated ~{need_tokens:,} tokens, prompt and requested completion) is longer than the "
        f"context window of every model that could serve it: {largest_text}. Shorten the conversation or ask "
        "for fewer max_tokens.",
        code="context_length_exceeded",
        param="messages",
    )


def no_capable_model_message(requested: str, req: Requirements, models: Iterable[Capabilities]) -> str:
    """The 422 message when gating leaves nothing: what the request needs and why each model can't."""
    reasons = "; ".join(f"{m.name}: {model_can_serve(m, req) or 'ok'}" for m in models)
    return (
        f"No model for '{requested}' can serve this request ({req.describe()}). {reasons}".rstrip(". ") + "."
    )
