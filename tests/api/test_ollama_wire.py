"""The Ollama wire's translators on their own: Ollama's request and answer shapes ↔ the internal OpenAI ones."""

from __future__ import annotations

import json

import pytest

from providers.adapters.base import Usage
from routing.api.ollama_wire import (
    StreamEncoder,
    Timing,
    chat_request,
    chat_response,
    embed_inputs,
    generate_request,
    generate_response,
    model_name,
    tag_name,
)
from routing.errors import GatewayError
from tests.emulator.content import TINY_PNG_B64

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize(("listed", "name"), [
    ("auto:latest", "auto"), ("groq/llama-3.3-70b:latest", "groq/llama-3.3-70b"), ("gpt-oss:120b", "gpt-oss:120b"),
    ("openrouter/openai/gpt-oss-120b:free", "openrouter/openai/gpt-oss-120b:free"),
])
def test_names_lose_only_the_latest_tag_and_get_it_back(listed, name):
    assert model_name(listed) == name
    assert tag_name(name) == listed


def test_chat_history_with_images_and_a_tool_round_trip_becomes_openai_messages():
    body = {"messages": [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "what is this?", "images": [TINY_PNG_B64]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            {"function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
        {"role": "tool", "content": "sunny"},
    ], "tools": [WEATHER], "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 20, "stop": ["x"],
                                        "seed": 3, "num_ctx": 8192, "top_k": 5},
        "format": "json"}
    request = chat_request(body, "auto")

    system, user, assistant, time_result, weather_result = request["messages"]
    assert user["content"] == [{"type": "text", "text": "what is this?"},
                               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_B64}"}}]
    weather, clock = assistant["tool_calls"]
    assert assistant["content"] is None
    assert json.loads(weather["function"]["arguments"]) == {"city": "Oslo"}
    assert time_result["tool_call_id"] == clock["id"] and weather_result["tool_call_id"] == weather["id"]
    assert request["tools"] == [WEATHER]
    assert {k: request[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.1, "top_p": 0.5, "max_tokens": 20, "stop": ["x"], "seed": 3}
    assert "num_ctx" not in request and "top_k" not in request
    assert request["response_format"] == {"type": "json_object"}


def test_generate_is_a_system_and_a_user_turn_and_a_schema_format_is_json_schema():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    request = generate_request({"prompt": "hi", "system": "be brief", "format": schema,
                                "options": {"num_predict": -1}}, "auto")
    assert request["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert request["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert "max_tokens" not in request


@pytest.mark.parametrize(("call", "param"), [
    (lambda: chat_request({"messages": [{"role": "robot", "content": "x"}]}, "m"), "messages.0.role"),
    (lambda: chat_request({"messages": [{"role": "user", "content": "x", "images": ["!!"]}]}, "m"),
     "messages.0.images.0"),
    (lambda: chat_request({"messages": [{"role": "user", "content": "x"}], "format": "yaml"}, "m"), "format"),
    (lambda: chat_request({"messages": [{"role": "user", "content": "x"}], "options": {"temperature": 9}}, "m"),
     "options.temperature"),
    (lambda: generate_request({"prompt": "def f(", "suffix": "return"}, "m"), "suffix"),
    (lambda: embed_inputs({"input": []}, legacy=False), "input"),
    (lambda: embed_inputs({"input": ["a", ""]}, legacy=False), "input"),
    (lambda: model_name(""), "model"),
])
def test_bad_requests_are_400_naming_the_field(call, param):
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.status == 400 and caught.value.param == param


def test_answers_carry_counts_durations_and_object_arguments():
    completion = {"choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning": "think",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6}}
    answer = chat_response(completion, model="auto", timing=Timing())
    assert answer["message"] == {"role": "assistant", "content": "", "thinking": "think", "tool_calls": [
        {"id": "c1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "x"}}}]}
    assert answer["done"] is True and answer["done_reason"] == "stop"
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (5, 6)
    assert answer["total_duration"] >= answer["eval_duration"] >= 0
    text = {"choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    generated = generate_response(text, model="auto", timing=Timing(), think=False)
    assert generated["response"] == "Hi" and generated["done_reason"] == "length" and "message" not in generated


def test_stream_is_ndjson_with_pieces_then_tool_calls_then_the_final_counts():
    encoder = StreamEncoder(model="auto:latest", generate=False, timing=Timing())
    out = encoder.start()
    chunks = [{"role": "assistant", "content": ""}, {"reasoning": "hm"}, {"content": "Hel"}, {"content": "lo"},
              {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": '{"a"'}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": ': 1}'}}]}]
    for delta in chunks:
        out += encoder.chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    out += encoder.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    out += encoder.finish(Usage(2, 3))
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["done"] for line in lines] == [False, False, False, False, True]
    assert lines[0]["message"] == {"role": "assistant", "content": "", "thinking": "hm"}
    assert "".join(line["message"]["content"] for line in lines) == "Hello"
    assert lines[3]["message"]["tool_calls"] == [{"id": "c1", "function": {"index": 0, "name": "w", "arguments": {"a": 1}}}]
    assert (lines[-1]["done_reason"], lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == ("stop", 2, 3)
    assert lines[-1]["total_duration"] > 0

    failed = StreamEncoder(model="m", generate=True, timing=Timing())
    assert json.loads(failed.fail(GatewayError(502, "upstream stream failed"))) == {"error": "upstream stream failed"}
    assert failed.keepalive() == b""
