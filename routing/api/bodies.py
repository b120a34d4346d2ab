"""JSON request bodies, parsed and checked by the edge (large bodies, in a thread) or by ninja's parser
(``exchange.JsonBodyParser``)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# Where the edge (routing.api.edge) leaves a body it parsed: (value, None) or (None, the ValueError raised).
PARSED_JSON_SCOPE_KEY = "freellm.parsed_json"

# Deeper than any real request (content parts, tool schemas) and far below where recursive code (token
# estimates, JSON encoding for the upstream) would hit Python's recursion limit.
MAX_JSON_DEPTH = 64


class BodyValueError(ValueError):
    """A JSON body that holds what no upstream takes (a non-finite number, a lone surrogate): a 400 that
    says why and names the parameter."""

    def __init__(self, param: str, reason: str) -> None:
        self.param = param
        self.message = f"We could not parse the JSON body of your request: {reason} (in `{param}`)."
        super().__init__(self.message)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_json(body: bytes) -> Any:
    """orjson with a nesting limit (at most MAX_JSON_DEPTH deep). orjson refuses what json would let through
    to the upstream (NaN, Infinity, 1e999, lone surrogates); for those the error names the field."""
    too_deep = ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = orjson.loads(body)
    except RecursionError:
        raise too_deep from None
    except orjson.JSONDecodeError as exc:
        _name_the_field(body, str(exc))
        raise
    if _nested_deeper_than(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _name_the_field(body: bytes, reason: str) -> None:
    """Raise BodyValueError naming the field when ``body`` is JSON only by json's lenient reading (a
    non-finite number, a lone surrogate); return for anything else (orjson's own error then stands)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise BodyValueError(_param(path) or "body", f"{reason}: a lone UTF-16 surrogate; send valid UTF-8 text")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise BodyValueError(_param(path) or "body", f"{reason}: numbers must be finite")
        elif isinstance(value, dict | list):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and _LONE_SURROGATE.search(key):
                    raise BodyValueError(_param(path) or "body", f"{reason}: a key with a lone UTF-16 surrogate")
                stack.append((child, (*path, key)))


def _nested_deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _param(path: tuple) -> str:
    return ".".join(str(part) for part in path)
