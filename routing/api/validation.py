"""Edge checks of the internal chat request (an OpenAI chat-completions body), whatever dialect it came in.

What an upstream would choke on (a 5xx counted against the route's health) or a provider adapter would
crash on is refused here with a 400 naming the parameter, and never forwarded: message roles, content
part shapes, tool calls. Non-finite numbers and lone surrogates are refused while the body is parsed
(``bodies.parse_json``). Unknown content part types pass through: providers add their own.
"""

from __future__ import annotations

from typing import Any

from routing.errors import GatewayError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, f"{param}: {message}", param=param, code="invalid_value")


def chat_messages_check(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty list of message objects")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(where, "must be a message object")
        role = message.get("role")
        if not isinstance(role, str):
            raise _invalid(f"{where}.role", "is required")
        if role not in ROLES:
            raise _invalid(f"{where}.role", f"must be one of {', '.join(sorted(ROLES))}, not {role[:40]!r}")
        _content_check(message.get("content"), f"{where}.content")
        if "tool_calls" in message and message["tool_calls"] is not None:
            _tool_calls_check(message["tool_calls"], f"{where}.tool_calls")
        for name in ("name", "tool_call_id"):
            if message.get(name) is not None and not isinstance(message[name], str):
                raise _invalid(f"{where}.{name}", "must be a string")


def _content_check(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(where, "must be a string or a list of content parts")
    for j, part in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid(at, "must be a content part object with a `type`")
        kind = part["type"]
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _invalid(f"{at}.text", "must be a string")
        if kind == "refusal" and not isinstance(part.get("refusal"), str):
            raise _invalid(f"{at}.refusal", "must be a string")
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str) or not image["url"]:
                raise _invalid(f"{at}.image_url", "must be an object with a `url` string")
        if kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise _invalid(f"{at}.input_audio", "must be an object with `data` (base64) and `format`")
        if kind == "file" and not isinstance(part.get("file"), dict):
            raise _invalid(f"{at}.file", "must be an object")


def _tool_calls_check(tool_calls: Any, where: str) -> None:
    if not isinstance(tool_calls, list):
        raise _invalid(where, "must be a list of tool call objects")
    for k, call in enumerate(tool_calls):
        at = f"{where}.{k}"
        if not isinstance(call, dict):
            raise _invalid(at, "must be a tool call object")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise _invalid(f"{at}.id", "must be a string")
        if call.get("type", "function") != "function":
            raise _invalid(f"{at}.type", "must be 'function'")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(f"{at}.function", "must be an object with a `name` string")
        if function.get("arguments") is not None and not isinstance(function["arguments"], str | dict):
            raise _invalid(f"{at}.function.arguments", "must be a JSON string")
