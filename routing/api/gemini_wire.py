"""Google's Gemini API wire (``v1beta``), inbound: translation to and from the internal OpenAI shapes.

Pure functions and one stream encoder, no I/O; ``gemini.py`` puts them on the endpoints.

Request (``GenerateContentRequest``) → chat-completions body:
- ``contents`` (roles ``user`` / ``model``) → ``user`` / ``assistant`` messages; ``text`` parts → text,
  ``inlineData`` images → ``image_url`` data URLs (audio → ``input_audio``, anything else → a ``file`` part),
  ``fileData`` images → ``image_url`` URLs; ``functionCall`` parts → the assistant's ``tool_calls`` (a Gemini 3
  ``thoughtSignature`` rides along in ``extra_content.google``, as the Gemini adapter expects it back);
  ``functionResponse`` parts → ``tool`` messages answering those calls (by ``id``, else by name, in order).
- ``systemInstruction`` → one system message; ``tools[].functionDeclarations`` → ``tools`` (``parameters`` in
  Google's OpenAPI-subset schema are turned into JSON schema, ``parametersJsonSchema`` passes unchanged);
  ``toolConfig.functionCallingConfig`` → ``tool_choice``.
- ``generationConfig``: temperature, topP, maxOutputTokens, stopSequences, seed, presence/frequency penalty,
  candidateCount (1 only), responseMimeType ``application/json`` with responseSchema / responseJsonSchema →
  ``response_format``.

Answer (``chat.completion`` or its chunks) → ``GenerateContentResponse``: one candidate with text and
``functionCall`` parts, ``finishReason`` (STOP, MAX_TOKENS, SAFETY, ...), ``usageMetadata``, ``modelVersion``.
A stream sends text as it comes and the function calls, assembled from their fragments, with the last event.

Errors: ``{"error": {"code", "message", "status", "details"}}``; a 429 carries ``RetryInfo.retryDelay``
(Gemini CLI backs off by it) besides the ``Retry-After`` header.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

from providers.adapters.base import Usage
from routing.errors import GatewayError

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    422: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

FINISH_REASONS = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}

CHAT_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
EMBEDDING_METHODS = ("embedContent", "batchEmbedContents")

# Gemini's OpenAPI-subset schema keys that JSON schema does not have (or spells differently).
_SCHEMA_DROPPED = frozenset({"nullable", "propertyOrdering", "example"})


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


def error_payload(exc: GatewayError) -> dict:
    """A GatewayError in Google's shape; freellm's own code goes in an ErrorInfo detail."""
    error: dict[str, Any] = {"code": exc.status, "message": exc.message, "status": status_name(exc.status)}
    details: list[dict] = []
    if exc.code:
        info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": exc.code.upper(),
                                "domain": "freellm"}
        if exc.param:
            info["metadata"] = {"param": exc.param}
        details.append(info)
    if retry_after := exc.headers.get("Retry-After"):
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"})
    if details:
        error["details"] = details
    return {"error": error}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value")


# --- field names ---------------------------------------------------------------------------------------

# Values that are the client's own data, whose keys are never Google's field names.
_OPAQUE_FIELDS = frozenset({"args", "response", "parametersJsonSchema", "responseJsonSchema", "default", "example",
                            "enum", "labels"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def camelized(value: Any) -> Any:
    """Google's JSON accepts each field as lowerCamelCase or as its proto name (``inline_data``, ``mime_type``,
    which the Python SDK sends inside some objects): one spelling for the code below. Property names of a
    schema and the client's own data (function args, responses, JSON schemas) are kept as they are."""
    if isinstance(value, list):
        return [camelized(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key) if isinstance(key, str) else key
        if name in _OPAQUE_FIELDS:
            out[name] = item
        elif name == "properties" and isinstance(item, dict):
            out[name] = {prop: camelized(schema) for prop, schema in item.items()}
        else:
            out[name] = camelized(item)
    return out


# --- model names -----------------------------------------------------------------------------------


def split_model_method(path: str) -> tuple[str, str | None]:
    """``models/{model}:{method}`` (the part after ``models/``) → (model, method). The model may itself hold
    slashes (``groq/llama-3.3-70b-versatile``, sent by the SDK as ``models/groq/...`` or URL-encoded) and
    colons (``gpt-oss:120b``), so the method is what follows the last colon, when it names one."""
    model, sep, method = path.rpartition(":")
    if sep and method in CHAT_METHODS + EMBEDDING_METHODS:
        return model_name(model), method
    return model_name(path), None


def model_name(name: str) -> str:
    """The gateway's model name from Google's resource name: ``models/auto`` → ``auto``."""
    return name.removeprefix("models/")


# --- request: contents → messages ------------------------------------------------------------------


def _data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def _standard_base64(data: Any, param: str) -> str:
    """The bytes of an inlineData part as standard base64. The SDKs may send the URL-safe alphabet
    (pydantic's bytes encoding), which upstreams given a data: URL would not accept."""
    if not isinstance(data, str) or not data:
        raise _bad("inlineData.data must be base64-encoded bytes", param)
    standard = data.strip().replace("-", "+").replace("_", "/")
    standard += "=" * (-len(standard) % 4)
    try:
        base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("inlineData.data is not valid base64", param) from None
    return standard


def _media_part(part: dict, param: str) -> dict:
    if inline := part.get("inlineData"):
        mime = str(inline.get("mimeType") or "")
        data = _standard_base64(inline.get("data"), f"{param}.inlineData.data")
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": _data_url(mime, data)}}
        if mime.startswith("audio/"):
            return {"type": "input_audio", "input_audio": {"data": data, "format": mime.split("/", 1)[1]}}
        if not mime:
            raise _bad("inlineData.mimeType is required", f"{param}.inlineData.mimeType")
        return {"type": "file", "file": {"file_data": _data_url(mime, data)}}
    file_data = part["fileData"]
    uri, mime = str(file_data.get("fileUri") or ""), str(file_data.get("mimeType") or "")
    if not uri.startswith(("http://", "https://")) or (mime and not mime.startswith("image/")):
        raise _bad("fileData is supported for images at an http(s) fileUri only; send other files as inlineData",
                   f"{param}.fileData")
    return {"type": "image_url", "image_url": {"url": uri}}


def _function_response_text(response: Any) -> str:
    # {"result": "sunny"} (the SDK's shape for a plain value) or {"output": ...} (Gemini CLI's) reads best as
    # the value itself.
    if isinstance(response, dict) and len(response) == 1:
        [(key, value)] = response.items()
        if key in ("result", "output") and isinstance(value, str):
            return value
    return json.dumps(response, ensure_ascii=False)


def _user_content(parts: list[dict]) -> str | list[dict]:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


class _CallLedger:
    """The model's function calls still waiting for their responses, to give each ``tool`` message the id
    of the call it answers: by the response's ``id`` when the client kept it, else the oldest open call of
    that name."""

    def __init__(self) -> None:
        self.open: list[tuple[str, str]] = []  # (id, name)
        self.count = 0

    def called(self, name: str, call_id: str | None) -> str:
        self.count += 1
        call_id = call_id or f"call_{self.count}_{name}"
        self.open.append((call_id, name))
        return call_id

    def answered(self, name: str, call_id: str | None) -> str:
        for index, (open_id, open_name) in enumerate(self.open):
            if (call_id and open_id == call_id) or (not call_id and open_name == name):
                del self.open[index]
                return open_id
        # A response to a call this history does not show (trimmed by the client): an id of its own.
        return call_id or f"call_{name}"


def contents_to_messages(contents: Any, system_instruction: Any = None) -> list[dict]:
    if not isinstance(contents, list) or not contents:
        raise _bad("contents must be a non-empty list", "contents")
    messages: list[dict] = []
    if system_instruction is not None:
        system = _system_text(system_instruction)
        if system:
            messages.append({"role": "system", "content": system})
    ledger = _CallLedger()
    for i, content in enumerate(contents):
        param = f"contents[{i}]"
        if not isinstance(content, dict):
            raise _bad("each item of contents must be an object", param)
        role = content.get("role") or "user"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _bad("parts must be a non-empty list", f"{param}.parts")
        if role == "model":
            messages.append(_assistant_message(parts, param, ledger))
        elif role in ("user", "function"):
            messages.extend(_user_messages(parts, param, ledger))
        else:
            raise _bad(f"role must be 'user' or 'model', not {role!r}", f"{param}.role")
    return messages


def _system_text(instruction: Any) -> str:
    if isinstance(instruction, str):
        return instruction
    if not isinstance(instruction, dict) or not isinstance(instruction.get("parts", []), list):
        raise _bad("systemInstruction must be a Content object with text parts", "systemInstruction")
    texts = []
    for j, part in enumerate(instruction.get("parts") or []):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise _bad("systemInstruction holds text parts only", f"systemInstruction.parts[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _assistant_message(parts: list, param: str, ledger: _CallLedger) -> dict:
    text: list[str] = []
    calls: list[dict] = []
    for j, part in enumerate(parts):
        where = f"{param}.parts[{j}]"
        if not isinstance(part, dict):
            raise _bad("each part must be an object", where)
        if part.get("thought"):
            continue  # the model's own thought summaries are not sent back as answer text
        if "text" in part:
            text.append(str(part["text"]))
        elif call := part.get("functionCall"):
            name = str(call.get("name") or "")
            if not name:
                raise _bad("functionCall.name is required", f"{where}.functionCall.name")
            tool_call: dict[str, Any] = {
                "id": ledger.called(name, call.get("id")),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False)},
            }
            if signature := part.get("thoughtSignature"):
                tool_call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(tool_call)
        else:
            raise _bad("a model turn holds text and functionCall parts", where)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user_messages(parts: list, param: str, ledger: _CallLedger) -> list[dict]:
    tool_messages: list[dict] = []
    content: list[dict] = []
    for j, part in enumerate(parts):
        where = f"{param}.parts[{j}]"
        if not isinstance(part, dict):
            raise _bad("each part must be an object", where)
        if "text" in part:
            content.append({"type": "text", "text": str(part["text"])})
        elif "inlineData" in part or "fileData" in part:
            content.append(_media_part(part, where))
        elif (response := part.get("functionResponse")) is not None:
            name = str(response.get("name") or "")
            if not name:
                raise _bad("functionResponse.name is required", f"{where}.functionResponse.name")
            tool_messages.append({
                "role": "tool",
                "tool_call_id": ledger.answered(name, response.get("id")),
                "content": _function_response_text(response.get("response")),
            })
        else:
            kinds = ", ".join(sorted(k for k in part if k not in ("thought", "thoughtSignature"))) or "empty"
            raise _bad(f"part kind not supported: {kinds} (text, inlineData, fileData, functionCall and "
                       "functionResponse are)", where)
    # Tool results answer the previous assistant turn, so they come before anything else the user added.
    messages = tool_messages
    if content:
        messages.append({"role": "user", "content": _user_content(content)})
    return messages


# --- request: tools and generationConfig -----------------------------------------------------------


def schema_to_json_schema(schema: Any) -> Any:
    """Google's OpenAPI-subset ``Schema`` (``type: "OBJECT"``, ``nullable``) → JSON schema."""
    if isinstance(schema, list):
        return [schema_to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_DROPPED:
            continue
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: schema_to_json_schema(prop) for name, prop in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf"):
            out[key] = schema_to_json_schema(value)
        else:
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad("each tool must be an object", f"tools[{i}]")
        others = sorted(k for k in tool if k != "functionDeclarations")
        if others:
            raise _bad(f"tools[{i}]: only functionDeclarations are supported through freellm, not "
                       f"{', '.join(others)}", f"tools[{i}]")
        for j, declaration in enumerate(tool.get("functionDeclarations") or []):
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not name:
                raise _bad("a function declaration needs a name", f"tools[{i}].functionDeclarations[{j}].name")
            function: dict[str, Any] = {"name": name}
            if declaration.get("description"):
                function["description"] = declaration["description"]
            if declaration.get("parametersJsonSchema") is not None:
                function["parameters"] = declaration["parametersJsonSchema"]
            elif declaration.get("parameters") is not None:
                function["parameters"] = schema_to_json_schema(declaration["parameters"])
            else:
                function["parameters"] = {"type": "object", "properties": {}}
            out.append({"type": "function", "function": function})
    return out


def _tool_choice(tool_config: Any) -> Any:
    config = (tool_config or {}).get("functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(config, dict):
        return None
    mode = str(config.get("mode") or "AUTO").upper()
    if mode == "NONE":
        return "none"
    if mode in ("ANY", "VALIDATED"):
        names = config.get("allowedFunctionNames") or []
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        return "required"
    return "auto"


def _response_format(config: dict) -> dict | None:
    mime = config.get("responseMimeType")
    schema = config.get("responseJsonSchema")
    if schema is None and config.get("responseSchema") is not None:
        schema = schema_to_json_schema(config["responseSchema"])
    if mime in (None, "", "text/plain") and schema is None:
        return None
    if mime not in (None, "", "application/json"):
        raise _bad(f"responseMimeType {mime!r} is not supported (text/plain and application/json are)",
                   "generationConfig.responseMimeType")
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


_SAMPLING = {
    "temperature": "temperature",
    "topP": "top_p",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


def _generation_config(config: Any) -> dict:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _bad("generationConfig must be an object", "generationConfig")
    out: dict[str, Any] = {}
    for google_name, openai_name in _SAMPLING.items():
        if config.get(google_name) is not None:
            out[openai_name] = config[google_name]
    temperature = config.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        raise _bad("temperature must be a number from 0 to 2", "generationConfig.temperature")
    if (max_tokens := config.get("maxOutputTokens")) is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _bad("maxOutputTokens must be a positive integer", "generationConfig.maxOutputTokens")
        out["max_tokens"] = max_tokens
    if stops := config.get("stopSequences"):
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stopSequences must be a list of strings", "generationConfig.stopSequences")
        out["stop"] = stops
    if config.get("candidateCount") not in (None, 1):
        raise _bad("only candidateCount=1 is supported: freellm returns one candidate per request, since a "
                   "failover to another provider could not promise several", "generationConfig.candidateCount")
    if response_format := _response_format(config):
        out["response_format"] = response_format
    return out


def to_chat_request(body: Any, model: str) -> dict:
    """A ``GenerateContentRequest`` → the internal chat-completions body (for ``model``)."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_value")
    body = camelized(body)
    if body.get("cachedContent"):
        # The cached prefix lives at Google; answering without it would answer another question.
        raise _bad("cachedContent is not supported through freellm: send the whole conversation in contents",
                   "cachedContent")
    request: dict[str, Any] = {
        "model": model,
        "messages": contents_to_messages(body.get("contents"), body.get("systemInstruction")),
    }
    if body.get("tools"):
        request["tools"] = _tools(body["tools"])
        if (choice := _tool_choice(body.get("toolConfig"))) is not None:
            request["tool_choice"] = choice
    request.update(_generation_config(body.get("generationConfig")))
    return request


def count_tokens_request(body: Any, model: str) -> dict:
    """``countTokens`` takes ``contents`` or a whole ``generateContentRequest``; both → a chat body."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_value")
    body = camelized(body)
    if isinstance(body.get("generateContentRequest"), dict):
        return to_chat_request(body["generateContentRequest"], model)
    return to_chat_request({"contents": body.get("contents")}, model)


# --- embeddings ------------------------------------------------------------------------------------


def _embed_text(request: Any, param: str) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _bad("content.parts must be a non-empty list of text parts", f"{param}.content.parts")
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise _bad("only text parts can be embedded", f"{param}.content.parts[{j}]")
        texts.append(part["text"])
    text = " ".join(texts)
    if not text:
        raise _bad("there is no text to embed", f"{param}.content.parts")
    return text


def embedding_request(body: Any, model: str, *, batch: bool) -> dict:
    """``embedContent`` / ``batchEmbedContents`` → an OpenAI embeddings body."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_value")
    body = camelized(body)
    if batch:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("requests must be a non-empty list", "requests")
        for i, item in enumerate(requests):
            named = model_name(str(item.get("model") or "")) if isinstance(item, dict) else ""
            if named and named != model:
                raise _bad(f"requests[{i}].model is {named!r} but the URL names {model!r}", f"requests[{i}].model")
    else:
        requests = [body]
        body = {"requests": requests}
    texts = [_embed_text(item, f"requests[{i}]" if batch else "") for i, item in enumerate(requests)]
    out: dict[str, Any] = {"model": model, "input": texts}
    dimensions = {item.get("outputDimensionality") for item in requests}
    dimensions.discard(None)
    if len(dimensions) > 1:
        raise _bad("every request of a batch must ask for the same outputDimensionality",
                   "requests.outputDimensionality")
    if dimensions:
        value = dimensions.pop()
        if not isinstance(value, int) or value < 1:
            raise _bad("outputDimensionality must be a positive integer", "outputDimensionality")
        out["dimensions"] = value
    return out


def embedding_response(embeddings: dict, *, batch: bool) -> dict:
    vectors = [item["embedding"] for item in sorted(embeddings.get("data") or [], key=lambda d: d.get("index", 0))]
    if batch:
        return {"embeddings": [{"values": vector} for vector in vectors]}
    return {"embedding": {"values": vectors[0]}}


# --- answers ---------------------------------------------------------------------------------------


def usage_metadata(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> dict:
    meta = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": max(0, completion_tokens - reasoning_tokens),
        "totalTokenCount": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        meta["thoughtsTokenCount"] = reasoning_tokens
    return meta


def _function_call_part(call: dict) -> dict:
    function = call.get("function") or {}
    try:
        args = json.loads(function.get("arguments") or "{}")
    except ValueError:
        args = {"arguments": function.get("arguments")}
    part: dict[str, Any] = {"functionCall": {"name": function.get("name", ""),
                                             "args": args if isinstance(args, dict) else {"value": args}}}
    if call.get("id"):
        part["functionCall"]["id"] = call["id"]
    if signature := ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature"):
        part["thoughtSignature"] = signature
    return part


def finish_reason(reason: str | None) -> str:
    return FINISH_REASONS.get(reason or "stop", "OTHER")


def from_completion(completion: dict, *, model: str, include_thoughts: bool = False) -> dict:
    """A ``chat.completion`` → a ``GenerateContentResponse``."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[dict] = []
    if include_thoughts and message.get("reasoning"):
        parts.append({"text": message["reasoning"], "thought": True})
    if message.get("content"):
        parts.append({"text": message["content"]})
    parts.extend(_function_call_part(call) for call in message.get("tool_calls") or ())
    usage = completion.get("usage") or {}
    reasoning = ((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
    return {
        "candidates": [{
            "content": {"role": "model", "parts": parts or [{"text": ""}]},
            "finishReason": finish_reason(choice.get("finish_reason")),
            "index": 0,
        }],
        "usageMetadata": usage_metadata(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                                        reasoning),
        "modelVersion": model,
        "responseId": str(completion.get("id") or uuid.uuid4().hex).removeprefix("chatcmpl-"),
    }


def model_entry(name: str, *, kind: str, description: str, context_window: int | None) -> dict:
    """One ``Model`` resource of ``GET /v1beta/models``."""
    methods = list(EMBEDDING_METHODS) if kind == "embedding" else list(CHAT_METHODS)
    entry: dict[str, Any] = {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "freellm",
        "displayName": name,
        "description": description,
        "supportedGenerationMethods": methods,
    }
    if context_window:
        entry["inputTokenLimit"] = context_window
    return entry


class StreamEncoder:
    """OpenAI chunks → Gemini stream events, as ``alt=sse`` events or as the elements of one JSON array
    (``streamGenerateContent`` without ``alt``, which is what Google answers then).

    Text goes out as it comes; tool calls arrive in fragments and are sent whole, with the finish reason and
    the usage, in the last event (Gemini streams each function call complete)."""

    # No keepalive timer: the SDKs wait as long as the upstream does.
    keepalive_seconds = None

    def __init__(self, *, model: str, sse: bool, include_thoughts: bool = False) -> None:
        self.model = model
        self.sse = sse
        self.include_thoughts = include_thoughts
        self.response_id = uuid.uuid4().hex
        self.sent = 0
        self.reason: str | None = None  # the upstream's finish reason, sent with the last event
        self.calls: dict[int, dict] = {}
        self.created = time.time()

    def _event(self, data: dict) -> bytes:
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        self.sent += 1
        if self.sse:
            return b"data: " + payload + b"\r\n\r\n"
        return (b"" if self.sent == 1 else b",\r\n") + payload

    def _response(self, parts: list[dict], **candidate: Any) -> dict:
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, **candidate}],
                "modelVersion": self.model, "responseId": self.response_id}

    def start(self) -> bytes:
        return b"" if self.sse else b"["

    def chunk(self, chunk: dict) -> bytes:
        parts: list[dict] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if self.include_thoughts and delta.get("reasoning"):
                parts.append({"text": delta["reasoning"], "thought": True})
            if delta.get("content"):
                parts.append({"text": delta["content"]})
            for fragment in delta.get("tool_calls") or ():
                self._collect(fragment)
            if choice.get("finish_reason"):
                self.reason = choice["finish_reason"]
        return self._event(self._response(parts)) if parts else b""

    def _collect(self, fragment: dict) -> None:
        call = self.calls.setdefault(fragment.get("index", len(self.calls)),
                                     {"id": None, "function": {"name": "", "arguments": ""}})
        call["id"] = call["id"] or fragment.get("id")
        function = fragment.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""
        if fragment.get("extra_content"):
            call["extra_content"] = fragment["extra_content"]

    def finish(self, usage: Usage) -> bytes:
        parts = [_function_call_part(self.calls[index]) for index in sorted(self.calls)]
        last = self._response(parts or [{"text": ""}], finishReason=finish_reason(self.reason))
        last["usageMetadata"] = usage_metadata(usage.prompt_tokens, usage.completion_tokens)
        return self._event(last) + (b"" if self.sse else b"]")

    def fail(self, error: GatewayError) -> bytes:
        # After the first byte the status is sent: the error is the stream's last element, as Google does.
        return self._event(error_payload(error)) + (b"" if self.sse else b"]")

    def keepalive(self) -> bytes:
        # Whitespace: a blank line is no SSE event and is valid between JSON array elements.
        return b"\r\n"
