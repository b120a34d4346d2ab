"""The error responses every operation can give, added to the OpenAPI schema (one place, every surface).

Each is OpenAI's error object; a dialect with its own envelope (Anthropic, Gemini, Ollama) documents it
on its own operations.
"""

from __future__ import annotations

from typing import Any

from ninja import NinjaAPI

ERROR_SCHEMA_NAME = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
# What each status means at this gateway.
ERROR_RESPONSES = {
    "400": "Invalid request: the message says what, `param` names the field",
    "401": "Missing or invalid API key",
    "403": "This key may not use that model or endpoint (its allowed models, or a staff-only endpoint)",
    "404": "Unknown model or endpoint",
    "405": "Method not allowed",
    "413": "Request body too large",
    "422": "No model of the chain can serve this request (tools, vision, context length)",
    "429": "Rate limited: every route exhausted, this key's or user's budget spent, or too many invalid keys "
           "from this address (see Retry-After)",
    "500": "Gateway error (logged)",
    "502": "The upstream failed",
    "503": "No upstream available right now, or the gateway's database is unavailable",
    "504": "The upstream timed out",
}


class GatewayAPI(NinjaAPI):
    """NinjaAPI whose schema documents the error responses of every operation."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
        reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in ERROR_RESPONSES.items():
                    responses.setdefault(status, {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    })
        return schema
