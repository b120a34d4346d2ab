"""Anthropic Messages ↔ the internal chat request: the pure translators, without a server.

The end-to-end behaviour (the anthropic SDK over real sockets, its stream accumulator included) is in
test_anthropic_messages.py; these pin the mapping rules themselves."""

from __future__ import annotations

import json

import pytest

from providers.adapters.base import Usage
from routing.api.anthropic import (
    AnthropicEncoder,
    chat_body,
    error_body,
    message_from_completion,
    model_page,
    stop_reason,
)
from routing.errors import GatewayError

PNG = "iVBORw0KGgo="


def _body(**fields):
    return chat_body({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields})


def test_system_blocks_with_cache_control_become_one_system_message():
    body, user = _body(system=[
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
    ])
    assert body["messages"][0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}
    assert body["messages"][1] == {"role": "user", "content": "hi"}
    assert body["max_tokens"] == 100
    assert user is None


def test_sampling_stop_sequences_and_metadata_user():
    body, user = _body(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END"],
                       metadata={"user_id": "user_abc_session_1"})
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.2, 0.9, ["END"])
    # No chat-completions equivalent that every upstream accepts.
    assert "top_k" not in body
    assert user == "user_abc_session_1"


def test_images_base64_and_url_become_image_url_parts():
    body, _ = _body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
    ]


def test_tool_loop_translates_tools_calls_and_results():
    body, _ = _body(
        tools=[{"name": "get_weather", "description": "Weather", "cache_control": {"type": "ephemeral"},
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me look", "signature": "sig"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "station offline"}]},
                {"type": "text", "text": "and tomorrow?"},
            ]},
        ],
    )
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    user, assistant, first, second, follow_up = body["messages"]
    assert assistant["content"] == "Looking."  # the thinking block is not replayed
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]] == [
        ("toolu_1", {"city": "Paris"}), ("toolu_2", {"city": "Lyon"})]
    assert first == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
    assert second == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: station offline"}
    assert follow_up == {"role": "user", "content": "and tomorrow?"}


def test_images_in_a_tool_result_follow_in_a_user_message():
    body, _ = _body(messages=[
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]},
    ])
    tool, images = body["messages"][1:]
    assert tool["role"] == "tool" and "image" in tool["content"]
    assert images["role"] == "user" and images["content"][0]["type"] == "image_url"


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
])
def test_tool_choice(choice, expected):
    body, _ = _body(tools=[{"name": "f", "input_schema": {"type": "object"}}], tool_choice=choice)
    assert body["tool_choice"] == expected


@pytest.mark.parametrize(("fields", "effort"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, "medium"),
    ({"thinking": {"type": "enabled", "budget_tokens": 31999}}, "high"),
    ({"thinking": {"type": "adaptive"}}, None),
    ({"thinking": {"type": "disabled"}}, None),
    ({"output_config": {"effort": "max"}}, "high"),
])
def test_thinking_maps_to_reasoning_effort(fields, effort):
    body, _ = _body(**fields)
    assert body.get("reasoning_effort") == effort


def test_structured_output_becomes_json_schema_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body, _ = _body(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}


@pytest.mark.parametrize(("fields", "param"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]}]}, "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "messages.0.content.0.tool_use_id"),
    ({"system": [{"type": "image"}]}, "system.0"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, "mcp_servers"),
    ({"container": "container_1"}, "container"),
])
def test_unsupported_or_malformed_input_is_a_clear_400(fields, param):
    with pytest.raises(GatewayError) as caught:
        _body(**fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert caught.value.message.startswith(param)


def _completion(message, finish="stop", **choice):
    return {"id": "c", "model": "up", "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 10}}}


def test_message_with_reasoning_text_and_tool_use():
    message = message_from_completion(_completion({
        "role": "assistant", "content": "Let me check.", "reasoning": "hmm",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }, finish="tool_calls"), model="coding")
    assert message["type"] == "message" and message["role"] == "assistant" and message["id"].startswith("msg_")
    assert message["model"] == "coding"
    assert message["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert (message["stop_reason"], message["stop_sequence"]) == ("tool_use", None)
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 10}


def test_stop_reasons():
    assert stop_reason("stop", None, ()) == ("end_turn", None)
    assert stop_reason("length", None, ()) == ("max_tokens", None)
    assert stop_reason("tool_calls", None, ()) == ("tool_use", None)
    assert stop_reason("content_filter", None, ()) == ("refusal", None)
    assert stop_reason("stop", "END", ["END"]) == ("stop_sequence", "END")
    assert stop_reason("stop", None, (), called=True) == ("tool_use", None)
    assert stop_reason(None, None, ()) == ("end_turn", None)
    assert stop_reason("length", None, (), called=True) == ("max_tokens", None)
    # A token id or a string the client did not ask for is no stop sequence of theirs.
    assert stop_reason("stop", 128009, ["END"]) == ("end_turn", None)


def test_tool_arguments_that_are_no_json_object_are_kept():
    message = message_from_completion(_completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "not json"}}]}, finish="tool_calls"), model="m")
    assert message["content"][0]["input"] == {"arguments": "not json"}


def _events(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if frame.strip():
            name_line, data_line = frame.split("\n")
            out.append((name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return out


def _chunk(delta=None, finish=None, **choice):
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}]}


def _stream(chunks, **kwargs):
    encoder = AnthropicEncoder(model="coding", input_tokens=12, **kwargs)
    data = encoder.start() + b"".join(encoder.chunk(c) for c in chunks) + encoder.finish(Usage(12, 5))
    return _events(data)


def test_stream_event_sequence_thinking_text_and_tools():
    events = _stream([
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning": "think "}), _chunk({"reasoning_content": "more"}),
        _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "f", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"y": 2}'}}]}),  # name comes later
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g"}}]}),
        _chunk({}, "tool_calls"),
    ])
    names = [name for name, _ in events]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 12
    blocks = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert blocks == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {}},
    ]
    assert [d["index"] for n, d in events if n.startswith("content_block")] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 3
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas[:4] == [{"type": "thinking_delta", "thinking": "think "},
                          {"type": "thinking_delta", "thinking": "more"},
                          {"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}]
    assert "".join(d["partial_json"] for d in deltas[4:6]) == '{"x": 1}'
    assert deltas[6] == {"type": "input_json_delta", "partial_json": '{"y": 2}'}
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"input_tokens": 12, "output_tokens": 5}}


def test_stream_stop_sequence_and_max_tokens():
    events = _stream([_chunk({"content": "a"}), _chunk({}, "stop", stop_reason="END")], stop_sequences=["END"])
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    events = _stream([_chunk({"content": "a"}), _chunk({}, "length")])
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_stream_failure_is_an_error_event_and_keepalive_a_ping():
    encoder = AnthropicEncoder(model="m", input_tokens=1)
    name, data = _events(encoder.fail(GatewayError(502, "upstream stream failed: boom")))[0]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "upstream stream failed: boom"}}
    assert _events(encoder.keepalive()) == [("ping", {"type": "ping"})]


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (413, "invalid_request_error"), (422, "invalid_request_error"),
    (401, "authentication_error"), (403, "permission_error"), (404, "not_found_error"),
    (429, "rate_limit_error"), (503, "overloaded_error"), (529, "overloaded_error"), (500, "api_error"),
    (502, "api_error"),
])
def test_error_types(status, kind):
    assert error_body(status, "x") == {"type": "error", "error": {"type": kind, "message": "x"}}


def test_model_page_in_anthropic_shape():
    entries = [{"id": name, "created": 0} for name in ("a", "b", "c")]
    page = model_page(entries)
    assert page["data"][0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "1970-01-01T00:00:00Z"}
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("a", "c", False)
    page = model_page(entries, limit=1, after_id="a")
    assert [m["id"] for m in page["data"]] == ["b"] and page["has_more"] is True
    assert [m["id"] for m in model_page(entries, before_id="c", limit=1)["data"]] == ["b"]


def test_a_context_overflow_renders_as_prompt_is_too_long():
    from routing.api.anthropic import render_error

    exc = GatewayError(400, "The request (~210,000 tokens) exceeds the largest context window checked (131,072).",
                       code="context_length_exceeded")
    resp = render_error(exc)
    body = json.loads(resp.content)
    assert resp.status_code == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long: The request (~210,000 tokens)")


def test_rendered_errors_keep_retry_after():
    from routing.api.anthropic import render_error

    resp = render_error(GatewayError(429, "all rate-limited", headers={"Retry-After": "7"}))
    assert resp.status_code == 429 and resp["Retry-After"] == "7"
    assert json.loads(resp.content)["error"]["type"] == "rate_limit_error"
