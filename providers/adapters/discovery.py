"""Reading each provider's model list into ``DiscoveredModel``s (model discovery). Pure: no HTTP, no Django.

Only what a list states is kept: a missing field stays None, so discovery never reports a capability the
provider did not claim.
"""

from __future__ import annotations

from typing import Any

from .base import DiscoveredModel

# OpenAI-compatible lists that type their models (Together, SiliconFlow, ...) use these words.
_OPENAI_TYPES = {
    "chat": "chat", "language": "chat", "code": "chat", "llm": "chat", "text": "chat",
    "embedding": "embedding", "embeddings": "embedding",
    "image": "image", "images": "image",
    "audio": "speech", "tts": "speech", "speech": "speech",
    "transcribe": "transcription", "transcription": "transcription", "stt": "transcription",
}  # fmt: skip
_CLOUDFLARE_TASKS = {
    "text generation": "chat",
    "text embeddings": "embedding",
    "text-to-image": "image",
    "automatic speech recognition": "transcription",
    "text-to-speech": "speech",
}


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _flag(values: Any, *names: str) -> bool | None:
    """Whether a list of parameter/feature names includes one of ``names`` (None: no list given)."""
    if not isinstance(values, list):
        return None
    lowered = {str(v).lower() for v in values}
    return any(name in lowered for name in names)


def parse_openai_models(payload: Any) -> list[DiscoveredModel]:
    """``GET /models`` of an OpenAI-compatible server; reads the extras OpenRouter, Groq, vLLM, Together and
    GitHub Models add (context length, modalities, supported parameters, type, capabilities)."""
    items = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ValueError("the answer has no model list (expected {\"data\": [...]})")
    found = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        top = item.get("top_provider") if isinstance(item.get("top_provider"), dict) else {}
        context = (
            _positive_int(item.get("context_length"))
            or _positive_int(item.get("context_window"))
            or _positive_int(item.get("max_model_len"))
            or _positive_int(top.get("context_length"))
        )
        architecture = item.get("architecture") if isinstance(item.get("architecture"), dict) else {}
        modalities = architecture.get("input_modalities")
        vision = _flag(modalities, "image")
        parameters = item.get("supported_parameters")
        tools, json_mode = _flag(parameters, "tools"), _flag(parameters, "response_format", "structured_outputs")
        capabilities = item.get("capabilities")
        if isinstance(capabilities, dict):
            vision = capabilities.get("vision", vision)
            tools = capabilities.get("function_calling", capabilities.get("tools", tools))
            json_mode = capabilities.get("json_mode", capabilities.get("response_format", json_mode))
        kind = _OPENAI_TYPES.get(str(item.get("type") or "").lower())
        found.append(
            DiscoveredModel(
                id=str(item["id"]), kind=kind, context_window=context,
                supports_tools=_bool(tools), supports_vision=_bool(vision), supports_json=_bool(json_mode),
                name=str(item.get("name") or item.get("display_name") or ""),
            )
        )
    return found


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def parse_gemini_models(payload: Any) -> list[DiscoveredModel]:
    """One page of Gemini's ``models.list``; chat and embedding models only (by their generation methods)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models", []), list):
        raise ValueError("the answer has no model list (expected {\"models\": [...]})")
    found = []
    for item in payload.get("models", []):
        if not isinstance(item, dict) or not item.get("name"):
            continue
        methods = item.get("supportedGenerationMethods") or []
        if "generateContent" in methods:
            kind = "chat"
        elif "embedContent" in methods:
            kind = "embedding"
        else:
            continue
        found.append(
            DiscoveredModel(
                id=str(item["name"]).removeprefix("models/"), kind=kind,
                context_window=_positive_int(item.get("inputTokenLimit")),
                name=str(item.get("displayName") or ""),
            )
        )
    return found


def parse_cohere_models(payload: Any) -> list[DiscoveredModel]:
    """Cohere's ``GET /v1/models``: chat and embed models, with context length and features."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise ValueError("the answer has no model list (expected {\"models\": [...]})")
    found = []
    for item in payload["models"]:
        if not isinstance(item, dict) or not item.get("name"):
            continue
        endpoints = item.get("endpoints") or []
        if "chat" in endpoints:
            kind = "chat"
        elif "embed" in endpoints:
            kind = "embedding"
        else:
            continue
        features = item.get("features")
        found.append(
            DiscoveredModel(
                id=str(item["name"]), kind=kind, context_window=_positive_int(item.get("context_length")),
                supports_tools=_flag(features, "tools", "tool_use", "strict_tools") if kind == "chat" else None,
                supports_vision=_flag(features, "vision") if kind == "chat" else None,
                supports_json=_flag(features, "json_mode", "json_schema") if kind == "chat" else None,
            )
        )
    return found


def parse_cloudflare_models(payload: Any) -> list[DiscoveredModel]:
    """Workers AI ``GET /accounts/{id}/ai/models/search``: models of the tasks the gateway serves."""
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, list):
        raise ValueError("the answer has no model list (expected {\"result\": [...]})")
    found = []
    for item in result:
        if not isinstance(item, dict) or not item.get("name"):
            continue
        task = item.get("task") if isinstance(item.get("task"), dict) else {}
        kind = _CLOUDFLARE_TASKS.get(str(task.get("name") or "").lower())
        if kind is None:
            continue
        properties = {
            str(p.get("property_id")): p.get("value") for p in item.get("properties") or [] if isinstance(p, dict)
        }
        tools = properties.get("function_calling")
        found.append(
            DiscoveredModel(
                id=str(item["name"]), kind=kind,
                context_window=_positive_int(properties.get("context_window")),
                supports_tools=None if tools is None else str(tools).lower() == "true",
                name=str(item.get("description") or "")[:100],
            )
        )
    return found
