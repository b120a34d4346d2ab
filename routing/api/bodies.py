"""JSON request bodies: parsed and checked in one walk, by the edge (large bodies, in a thread) or by ninja's
parser (``exchange.JsonBodyParser``)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Where the edge (routing.api.edge) leaves a body it parsed: (value, None) or (None, the ValueError raised).
PARSED_JSON_SCOPE_KEY = "freellm.parsed_json"

# Deeper than any real request (content parts, tool schemas) and far below where recursive code (token
# estimates, JSON encoding for the upstream) would hit Python's recursion limit.
MAX_JSON_DEPTH = 64


class BodyValueError(ValueError):
    """A JSON body that parses but holds what no upstream takes (a non-finite number, a lone surrogate):
    a 400 naming the parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = f"{param}: {message}"


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_json(body: bytes) -> Any:
    """A JSON body checked in one walk: nesting at most MAX_JSON_DEPTH deep, finite numbers only (json
    reads NaN, Infinity and 1e999), text without lone surrogates (``"\\ud800"`` parses, but is no UTF-8)."""
    too_deep = ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(body)
    except RecursionError:
        raise too_deep from None
    stack: list[tuple[Any, int, tuple]] = [(data, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise BodyValueError(_param(path), "holds a lone UTF-16 surrogate; send valid UTF-8 text")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise BodyValueError(_param(path), "must be a finite number")
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise too_deep
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and _LONE_SURROGATE.search(key):
                    raise BodyValueError(_param(path) or "body", "has a key with a lone UTF-16 surrogate")
                if isinstance(child, str | float | dict | list):
                    stack.append((child, depth + 1, (*path, key)))
    return data


def _param(path: tuple) -> str:
    return ".".join(str(part) for part in path)
