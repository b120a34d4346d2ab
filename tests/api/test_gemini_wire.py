"""The Gemini wire's translators on their own: Google's request and answer shapes ↔ the internal OpenAI ones."""

from __future__ import annotations

import json

import pytest

from providers.adapters.base import Usage
from routing.api.gemini_wire import (
    StreamEncoder,
    count_tokens_request,
    embedding_request,
    embedding_response,
    error_payload,
    from_completion,
    schema_to_json_schema,
    split_model_method,
    to_chat_request,
)
from routing.errors import GatewayError
from tests.emulator.content import TINY_PNG_B64


@pytest.mark.parametrize(("path", "expected"), [
    ("auto:generateContent", ("auto", "generateContent")),
    ("groq/llama-3.3-70b-versatile:streamGenerateContent", ("groq/llama-3.3-70b-versatile", "streamGenerateContent")),
    ("models/groq/llama:countTokens", ("groq/llama", "countTokens")),
    ("ollama/gpt-oss:120b:generateContent", ("ollama/gpt-oss:120b", "generateContent")),
    ("openrouter/openai/gpt-oss-120b:free", ("openrouter/openai/gpt-oss-120b:free", None)),
    ("gemini-2.5-flash", ("gemini-2.5-flash", None)),
])
def test_model_and_method_split_on_the_last_colon_that_names_a_method(path, expected):
    assert split_model_method(path) == expected


def test_a_conversation_with_a_function_call_round_trip_becomes_openai_messages():
    body = {
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "weather in Oslo?"},
                                       {"inlineData": {"mimeType": "image/png", "data": TINY_PNG_B64}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                         "thoughtSignature": "c2ln"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]},
        ],
        "tools": [{"functionDeclarations": [{
            "name": "get_weather", "description": "weather",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING", "nullable": True}},
                           "required": ["city"], "propertyOrdering": ["city"]},
        }]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"],
                             "topK": 4},
    }
    request = to_chat_request(body, "auto")

    system, user, assistant, tool = request["messages"]
    assert system == {"role": "system", "content": "Be terse."}
    assert user["content"][0] == {"type": "text", "text": "weather in Oslo?"}
    assert user["content"][1]["image_url"]["url"] == f"data:image/png;base64,{TINY_PNG_B64}"
    [call] = assistant["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert call["extra_content"] == {"google": {"thought_signature": "c2ln"}}
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    assert request["tools"][0]["function"]["parameters"] == {
        "type": "object", "properties": {"city": {"type": ["string", "null"]}}, "required": ["city"]}
    assert request["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert {k: request[k] for k in ("temperature", "top_p", "max_tokens", "stop")} == {
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "stop": ["END"]}
    assert "top_k" not in request


def test_function_responses_find_their_calls_by_id_then_by_name_in_order():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "two cities"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"c": "a"}}},
                                    {"functionCall": {"name": "w", "args": {"c": "b"}, "id": "x9"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "id": "x9", "response": {"t": 2}}},
                                   {"functionResponse": {"name": "w", "response": {"t": 1}}},
                                   {"text": "and now?"}]},
    ]}
    messages = to_chat_request(body, "auto")["messages"]
    first, second = messages[1]["tool_calls"]
    assert second["id"] == "x9"
    assert [m.get("tool_call_id") for m in messages[2:4]] == ["x9", first["id"]]
    assert json.loads(messages[2]["content"]) == {"t": 2}
    assert messages[4] == {"role": "user", "content": "and now?"}


@pytest.mark.parametrize(("config", "expected"), [
    ({"responseMimeType": "application/json"}, {"type": "json_object"}),
    ({"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}},
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}),
    ({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}),
])
def test_json_output_becomes_response_format(config, expected):
    request = to_chat_request({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config}, "m")
    assert request["response_format"] == expected


@pytest.mark.parametrize(("body", "param"), [
    ({}, "contents"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({"contents": [{"parts": []}]}, "contents[0].parts"),
    ({"contents": [{"parts": [{"executableCode": {}}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]},
     "contents[0].parts[0].inlineData.data"),
    ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}, "tools[0]"),
    ({"contents": [{"parts": [{"text": "x"}]}], "cached_content": "cachedContents/abc"}, "cachedContent"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}},
     "generationConfig.candidateCount"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 0}},
     "generationConfig.maxOutputTokens"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}},
     "generationConfig.responseMimeType"),
])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(GatewayError) as caught:
        to_chat_request(body, "m")
    assert caught.value.status == 400 and caught.value.param == param


def test_schema_conversion_keeps_json_schema_and_lowercases_google_types():
    assert schema_to_json_schema({"type": "ARRAY", "items": {"type": "STRING", "enum": ["a"]}, "minItems": 1}) == {
        "type": "array", "items": {"type": "string", "enum": ["a"]}, "minItems": 1}


def test_count_tokens_takes_contents_or_a_whole_request():
    contents = [{"role": "user", "parts": [{"text": "count me"}]}]
    assert count_tokens_request({"contents": contents}, "m")["messages"] == [{"role": "user", "content": "count me"}]
    whole = count_tokens_request({"generateContentRequest": {"contents": contents,
                                                             "systemInstruction": {"parts": [{"text": "s"}]}}}, "m")
    assert [m["role"] for m in whole["messages"]] == ["system", "user"]


def test_embedding_requests_single_and_batch():
    assert embedding_request({"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4}, "e", batch=False) == {
        "model": "e", "input": ["a"], "dimensions": 4}
    batch = {"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}},
                          {"model": "models/e", "content": {"parts": [{"text": "b"}]}}]}
    assert embedding_request(batch, "e", batch=True) == {"model": "e", "input": ["a", "b"]}
    with pytest.raises(GatewayError) as caught:
        embedding_request({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}, "e",
                          batch=True)
    assert caught.value.param == "requests[0].model"
    data = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}
    assert embedding_response(data, batch=True) == {"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}
    assert embedding_response(data, batch=False) == {"embedding": {"values": [1.0]}}


def test_a_completion_with_tool_calls_becomes_function_call_parts_and_usage_metadata():
    completion = {
        "id": "chatcmpl-abc",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning": "hmm",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                            "extra_content": {"google": {"thought_signature": "c2ln"}}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                  "completion_tokens_details": {"reasoning_tokens": 2}},
    }
    answer = from_completion(completion, model="groq/llama")
    [candidate] = answer["candidates"]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"] == [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1"}, "thoughtSignature": "c2ln"},
    ]
    assert answer["usageMetadata"] == {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17,
                                       "thoughtsTokenCount": 2}
    assert answer["modelVersion"] == "groq/llama" and answer["responseId"] == "abc"
    with_thoughts = from_completion(completion, model="m", include_thoughts=True)
    assert with_thoughts["candidates"][0]["content"]["parts"][0] == {"text": "hmm", "thought": True}


def _chunks(*deltas, finish="stop"):
    out = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas]
    out.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return out


def test_sse_stream_sends_text_as_it_comes_and_tool_calls_whole_at_the_end():
    encoder = StreamEncoder(model="m", sse=True)
    out = encoder.start()
    for chunk in _chunks({"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"},
                         {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": '{"ci'}}]},
                         {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "x"}'}}]}, finish="tool_calls"):
        out += encoder.chunk(chunk)
    out += encoder.finish(Usage(3, 4))
    events = [json.loads(line.removeprefix(b"data: ")) for line in out.split(b"\r\n\r\n") if line]
    assert [e["candidates"][0]["content"]["parts"] for e in events] == [
        [{"text": "Hel"}], [{"text": "lo"}], [{"functionCall": {"name": "w", "args": {"city": "x"}, "id": "c1"}}]]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}
    assert "finishReason" not in events[0]["candidates"][0]


def test_array_stream_is_one_json_array_even_when_it_fails():
    encoder = StreamEncoder(model="m", sse=False)
    whole = encoder.start() + encoder.keepalive()
    for chunk in _chunks({"content": "a"}, {"content": "b"}, finish="length"):
        whole += encoder.chunk(chunk)
    whole += encoder.finish(Usage(1, 2))
    parsed = json.loads(whole)
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in parsed] == ["a", "b", ""]
    assert parsed[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"

    broken = StreamEncoder(model="m", sse=False)
    whole = broken.start() + broken.chunk(_chunks({"content": "a"})[0])
    whole += broken.fail(GatewayError(502, "upstream stream failed", code="stream_interrupted"))
    parsed = json.loads(whole)
    assert parsed[-1]["error"]["code"] == 502 and parsed[-1]["error"]["status"] == "UNAVAILABLE"


def test_errors_in_google_shape_carry_retry_info_for_a_429():
    exc = GatewayError(429, "3 routes checked: 3 rate-limited", code="all_routes_exhausted",
                       headers={"Retry-After": "12"})
    error = error_payload(exc)["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"} in error["details"]
    assert error_payload(GatewayError(404, "nope"))["error"] == {"code": 404, "message": "nope", "status": "NOT_FOUND"}
    statuses = {status: error_payload(GatewayError(status, "x"))["error"]["status"] for status in (401, 422, 503, 504)}
    assert statuses == {401: "UNAUTHENTICATED", 422: "FAILED_PRECONDITION", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
