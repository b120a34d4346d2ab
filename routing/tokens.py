"""Token estimates for quota reservations, made before we know which model (and tokenizer) will serve.

Not tiktoken: it downloads its BPE tables on first use (no network here, and a gateway should not fetch
files on the hot path), and it would only be right for OpenAI's own models anyway; every provider has its
own tokenizer. We use a calibrated character count instead: ~4 characters per token for ASCII text
(OpenAI's rule of thumb for English and code, within ~10-15% on cl100k/o200k and Llama 3 tokenizers),
one token per non-ASCII character (CJK, emoji: a safe upper bound), plus the per-message overhead of the
chat format. The estimate only has to be good enough to reserve: ``settle`` replaces it with the usage
the provider reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

CHARS_PER_TOKEN = 4.0
# Role, separators and the like per chat message, and the primer of the assistant's reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
# An image part, whatever its size (a high-detail tile set is ~765 on OpenAI; Gemini counts 258).
TOKENS_PER_IMAGE = 800
TOKENS_PER_AUDIO = 1000


def _text_tokens(text: str) -> int:
    if not text:
        return 0
    # In C, not per character in Python: an agent's 100 KB prompt took ~8 ms here that way.
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, Mapping):
        kind = content.get("type")
        if kind in ("image_url", "image", "input_image"):
            return TOKENS_PER_IMAGE
        if kind in ("input_audio", "audio"):
            return TOKENS_PER_AUDIO
        if "text" in content and isinstance(content["text"], str):
            return _text_tokens(content["text"])
        return _text_tokens(json.dumps(content, ensure_ascii=False, default=str))
    if isinstance(content, Iterable) and not isinstance(content, bytes | bytearray):
        return sum(_content_tokens(part) for part in content)
    return _text_tokens(str(content))


def estimate_tokens(messages_or_text: Any) -> int:
    """Estimated prompt tokens of a chat ``messages`` list, a string, or a list of strings (embeddings)."""
    if messages_or_text is None:
        return 0
    if isinstance(messages_or_text, str):
        return _text_tokens(messages_or_text)
    items = list(messages_or_text)
    if items and all(isinstance(m, Mapping) and "role" in m for m in items):
        total = TOKENS_PER_REPLY
        for message in items:
            total += TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
            if name := message.get("name"):
                total += _text_tokens(str(name))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                total += TOKENS_PER_MESSAGE + _text_tokens(str(function.get("name", "")))
                total += _text_tokens(str(function.get("arguments", "")))
        return total
    if items and all(isinstance(i, int) for i in items):
        return len(items)  # already token ids
    return sum(estimate_tokens(i) if not isinstance(i, Mapping) else _content_tokens(i) for i in items)


def estimate_request_tokens(request: Mapping[str, Any], output_reserve: int | None = None) -> int:
    """What ``reserve`` takes for a request: the prompt estimate plus the output it may produce,
    ``min(max_tokens or reserve, FREELLM_OUTPUT_RESERVE)``. Pass ``output_reserve=0`` for embeddings."""
    from django.conf import settings

    cap = settings.FREELLM_OUTPUT_RESERVE if output_reserve is None else output_reserve
    prompt = 0
    if "messages" in request:
        prompt += estimate_tokens(request.get("messages") or [])
    for field in ("input", "prompt"):
        if field in request:
            prompt += estimate_tokens(request[field])
    if tools := request.get("tools"):
        prompt += _text_tokens(json.dumps(tools, ensure_ascii=False, default=str))
    if fmt := request.get("response_format"):
        if isinstance(fmt, Mapping) and fmt.get("json_schema"):
            prompt += _text_tokens(json.dumps(fmt["json_schema"], ensure_ascii=False, default=str))
    asked = request.get("max_completion_tokens") or request.get("max_tokens")
    try:
        asked = int(asked) if asked else None
    except (TypeError, ValueError):
        asked = None
    output = min(asked or cap, cap) if cap > 0 else 0
    return prompt + max(0, output)
