"""Adapter registry: ``Provider.adapter`` (a name) → the adapter that speaks that provider's wire format.

Adapters are stateless (the httpx client and the target are passed into every call), so one instance per
name is shared. Modules are imported on first use, so one broken or missing adapter cannot take the others
down with it.
"""

from __future__ import annotations

import importlib

from .base import Adapter

# name → "module:Class" inside this package
ADAPTERS: dict[str, str] = {
    "openai": "openai:OpenAIAdapter",
    "gemini": "gemini:GeminiAdapter",
    "cohere": "cohere:CohereAdapter",
    "cloudflare": "cloudflare:CloudflareAdapter",
    "aihorde": "aihorde:AIHordeAdapter",
}

_instances: dict[str, Adapter] = {}


def adapter_names() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(name: str) -> Adapter:
    """The shared adapter instance for ``name``; ``KeyError`` for an unknown name."""
    if name not in _instances:
        module_name, _, class_name = ADAPTERS[name].partition(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        _instances[name] = getattr(module, class_name)()
    return _instances[name]
