"""Deterministic answer material shared by every wire format: reply text, token estimates, vectors, media.

Wire-format modules (openai.py, gemini.py, cohere.py, cloudflare.py) turn these into their own shapes, so
the same question gets the same answer whichever provider the gateway picked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

# A valid 1x1 transparent PNG.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)
TINY_PNG_B64 = base64.b64encode(TINY_PNG).decode()

DEFAULT_EMBEDDING_DIMENSIONS = 8
MIN_STREAM_CHUNKS = 3

SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def estimate_tokens(text: str) -> int:
    """The emulator's tokenizer: one token per four characters, at least one for non-empty text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def content_text(content: Any) -> str:
    """Text of an OpenAI message content: a string or a list of parts (text parts joined by spaces)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return " ".join(text for text in texts if text)
    return str(content)


def messages_text(messages: list[dict]) -> str:
    return "\n".join(content_text(message.get("content")) for message in messages or [])


def estimate_prompt_tokens(messages: list[dict]) -> int:
    return estimate_tokens(messages_text(messages))


def last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages or []):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def reply_text(messages: list[dict], *, json_mode: bool = False) -> str:
    """``Echo: <last user text>``; after a tool result, ``Tool said: <result>``; JSON when asked for JSON."""
    last = (messages or [{}])[-1]
    if last.get("role") == "tool":
        text = f"Tool said: {content_text(last.get('content'))}"
    else:
        text = f"Echo: {last_user_text(messages)}"
    if json_mode:
        return json.dumps({"echo": last_user_text(messages)})
    return text


def cut_at_stop(text: str, stop: Any) -> tuple[str, str | None]:
    """The text up to the first of the ``stop`` sequences it contains, and that sequence (None if none)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str) and s]
    found = [(text.find(s), s) for s in stops if s in text]
    if not found:
        return text, None
    position, sequence = min(found)
    return text[:position], sequence


def wants_tool(messages: list[dict], tools: list[dict] | None, tool_choice: Any) -> bool:
    """A tool call is returned when tools are offered and either the last message says "call tool" or
    ``tool_choice`` demands one (``"required"`` or a named function); ``"none"`` forbids it."""
    if not tools or tool_choice == "none":
        return False
    if tool_choice == "required" or isinstance(tool_choice, dict):
        return True
    last = (messages or [{}])[-1]
    return last.get("role") == "user" and "call tool" in content_text(last.get("content")).lower()


def chosen_tool(tools: list[dict], tool_choice: Any) -> dict:
    """The function to call: the one named by tool_choice, else the first tool."""
    functions = [tool.get("function", tool) for tool in tools]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function
    return functions[0]


def example_arguments(schema: dict | None) -> dict:
    """Deterministic arguments that satisfy a JSON schema's properties by type."""
    properties = (schema or {}).get("properties") or {}
    samples = {"string": "echo", "number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {}}
    arguments = {}
    for name, prop in properties.items():
        if "enum" in prop and prop["enum"]:
            arguments[name] = prop["enum"][0]
            continue
        kind = prop.get("type", "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        arguments[name] = samples.get(kind, "echo")
    return arguments


def fim_text(prompt: str, suffix: str | None) -> str:
    """The emulator's fill-in-the-middle answer (``/fim/completions``): names the edges it was given."""
    if suffix:
        return f"MIDDLE({prompt[-8:]}|{suffix[:8]})"
    return f"CONTINUED({prompt[-8:]})"


THINK_TAG_TEXT = "Let me think about this."
TOOL_CALL_LEAD = "I will call the tool."


def tool_call_text(style: str, name: str, arguments: dict) -> str:
    """A tool call written as text, the way models without native tool calling (or served without a tool
    parser) write it; see the ``textcall=`` key directive."""
    args = json.dumps(arguments)
    if style == "function":
        return f"<function={name}>{args}</function>"
    if style == "params":
        params = "".join(f"<parameter={key}>\n{value if isinstance(value, str) else json.dumps(value)}\n"
                         "</parameter>\n" for key, value in arguments.items())
        return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"
    if style == "kimi":
        return (f"<|tool_calls_section_begin|><|tool_call_begin|>functions.{name}:0<|tool_call_argument_begin|>"
                f"{args}<|tool_call_end|><|tool_calls_section_end|>")
    if style == "deepseek":
        return (f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```"
                "<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
    if style == "json":
        return json.dumps({"name": name, "arguments": arguments})
    if style == "args":
        return args
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def split_chunks(text: str, minimum: int = MIN_STREAM_CHUNKS) -> list[str]:
    """Split text into at least ``minimum`` non-empty pieces (word boundaries when there are enough words).

    Joining the pieces gives back the text exactly.
    """
    words = text.split(" ")
    if len(words) >= minimum:
        return [word + (" " if index < len(words) - 1 else "") for index, word in enumerate(words)]
    size = max(1, math.ceil(len(text) / minimum))
    pieces = [text[start : start + size] for start in range(0, len(text), size)]
    return pieces or [""]


def embedding_vector(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector derived from the text's SHA-256: same text, same vector."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32 array, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def transcript_text(filename: str, size: int) -> str:
    return f"Transcript of {filename} ({size} bytes)."


def speech_audio(text: str, response_format: str = "mp3") -> tuple[bytes, str]:
    """Fake audio bytes (a format tag followed by the text) and the content type for the format."""
    content_type = SPEECH_CONTENT_TYPES.get(response_format, "audio/mpeg")
    return f"EMU-AUDIO:{response_format}:".encode() + text.encode(), content_type
