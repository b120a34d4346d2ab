"""The Responses dialect's pure translators: request → internal chat body, chat.completion → Response, and
the stream encoder's events (validated against the official SDK's types)."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter

from providers.adapters.base import Usage
from routing.api.responses import ResponsesEncoder, chat_request, response_object, response_skeleton
from routing.errors import GatewayError

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}


def test_string_input_and_instructions_become_system_and_user_messages():
    chat = chat_request({"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 50,
                         "temperature": 0.2, "reasoning": {"effort": "low"}, "store": False})
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": "hi"}],
                    "max_tokens": 50, "temperature": 0.2, "reasoning_effort": "low"}


def test_items_map_to_chat_messages_with_tool_calls_and_results():
    chat = chat_request({"model": "m", "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False,
                         "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "sun"}]},
    ]})
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "sun"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER["parameters"],
        "strict": True}}]
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is False


def test_history_goes_before_the_input_and_instructions_stay_first():
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
               {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Echo: one", "annotations": []}]}]
    chat = chat_request({"model": "m", "input": "two", "instructions": "sys"}, history=history)
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        ("system", "sys"), ("user", "one"), ("assistant", "Echo: one"), ("user", "two")]


def test_text_format_and_tool_choice_translate():
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    chat = chat_request({"model": "m", "input": "x", "tools": [WEATHER, {**WEATHER, "name": "other"}],
                         "tool_choice": {"type": "allowed_tools", "mode": "required",
                                         "tools": [{"type": "function", "name": "other"}]},
                         "text": {"format": {"type": "json_schema", "name": "Echo", "schema": schema, "strict": True}}})
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "Echo", "schema": schema, "strict": True}}
    assert [t["function"]["name"] for t in chat["tools"]] == ["other"] and chat["tool_choice"] == "required"
    named = chat_request({"model": "m", "input": "x", "tools": [WEATHER],
                          "tool_choice": {"type": "function", "name": "get_weather"},
                          "text": {"format": {"type": "json_object"}}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert named["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("body, param, words", [
    ({"tools": [{"type": "web_search"}]}, "tools.0.type", "'web_search'"),
    ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]}, "tools.1.type", "'file_search'"),
    ({"tools": [{"type": "computer_use_preview"}]}, "tools.0.type", "'computer_use_preview'"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0", "item_reference"),
    ({"input": [{"type": "local_shell_call", "id": "x"}]}, "input.0.type", "'local_shell_call'"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.content.0.type",
     "'input_file'"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role", "role"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input.0.call_id", "call_id"),
    ({"background": True}, "background", "background"),
    ({"input": []}, "input", "input is required"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "web_search_preview"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "yaml"),
])
def test_what_cannot_be_served_is_a_400_naming_it(body, param, words):
    with pytest.raises(GatewayError) as caught:
        chat_request({"model": "m", "input": "x", **body})
    assert caught.value.status == 400 and caught.value.param == param
    assert words in caught.value.message


def _sdk_response(response: dict):
    from openai.types.responses import Response

    return Response.model_validate(response)


def test_a_completion_becomes_a_response_the_sdk_reads():
    completion = {"id": "c", "object": "chat.completion", "model": "up/m", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "let me look", "reasoning": "thinking",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    request = {"model": "coding", "input": "x", "tools": [WEATHER], "instructions": "sys"}
    response = _sdk_response(response_object(completion, request=request, response_id="resp_1", created_at=1))
    assert (response.id, response.status, response.model, response.instructions) == ("resp_1", "completed",
                                                                                      "up/m", "sys")
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "let me look"
    call = response.output[2]
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"city":"Oslo"}')
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (10, 5, 15)
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert response.tools[0].name == "get_weather" and response.parallel_tool_calls is True


def test_a_truncated_answer_is_incomplete():
    completion = {"model": "m", "choices": [{"index": 0, "finish_reason": "length",
                                             "message": {"role": "assistant", "content": "half"}}]}
    response = _sdk_response(response_object(completion, request={"model": "m"}, response_id="resp_2"))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def _events(data: bytes) -> list[dict]:
    from openai.types.responses import ResponseStreamEvent

    adapter = TypeAdapter(ResponseStreamEvent)
    events = []
    for frame in data.decode().split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        name_line, data_line = frame.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {event['type']}"
        adapter.validate_python(event)  # the official SDK's own type for this event
        events.append(event)
    return events


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"object": "chat.completion.chunk", "model": "up/m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_events_come_in_documented_order_with_sequence_numbers():
    encoder = ResponsesEncoder(response_skeleton({"model": "coding", "tools": [WEATHER]}, response_id="resp_s"))
    data = encoder.start()
    for chunk in [
        _chunk({"role": "assistant", "reasoning": "hmm"}),
        _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}, "tool_calls"),
        {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    ]:
        data += encoder.chunk(chunk)
    data += encoder.keepalive() + encoder.finish(Usage(1, 1))
    events = _events(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]
    assert events[12]["text"] == "Hello" and events[18]["arguments"] == '{"city":"Oslo"}'
    final = _sdk_response(events[-1]["response"])
    assert final.output_text == "Hello" and final.output[2].call_id == "call_a"
    assert final.usage.input_tokens == 7  # the provider's count beats the estimate
    assert encoder.final["output"] == events[-1]["response"]["output"]


def test_a_stream_that_breaks_ends_with_response_failed():
    encoder = ResponsesEncoder(response_skeleton({"model": "m"}, response_id="resp_f"))
    data = encoder.start() + encoder.chunk(_chunk({"content": "par"}))
    data += encoder.fail(GatewayError(502, "upstream stream failed: reset"))
    events = _events(data)
    assert events[-1]["type"] == "response.failed"
    failed = _sdk_response(events[-1]["response"])
    assert failed.status == "failed" and "reset" in failed.error.message
    assert failed.output[0].status == "incomplete" and failed.output_text == "par"


APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}}


def test_custom_tools_go_upstream_as_one_string_argument_functions():
    chat = chat_request({"model": "m", "tools": [APPLY_PATCH], "tool_choice": {"type": "custom", "name": "apply_patch"},
                         "input": [
        {"role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"},
    ]})
    [tool] = chat["tools"]
    assert tool["function"]["name"] == "apply_patch"
    assert tool["function"]["parameters"]["required"] == ["input"]
    assert "start: begin_patch" in tool["function"]["description"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    assert chat["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"input": "*** Begin Patch"}'
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "Done!"}


def test_a_custom_tool_call_comes_back_as_custom_tool_call():
    completion = {"model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"diff"}'}}]}}]}
    response = _sdk_response(response_object(completion, request={"model": "m", "tools": [APPLY_PATCH]},
                                             response_id="resp_c"))
    [call] = response.output
    assert (call.type, call.call_id, call.name, call.input) == ("custom_tool_call", "c1", "apply_patch", "diff")

    encoder = ResponsesEncoder(response_skeleton({"model": "m", "tools": [APPLY_PATCH]}, response_id="resp_cs"),
                               custom_tools=frozenset({"apply_patch"}))
    data = encoder.start() + encoder.chunk(_chunk({"tool_calls": [
        {"index": 0, "id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": '{"inp'}}]}))
    data += encoder.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ut":"*** Begin"}'}}]},
                                 "tool_calls"))
    events = _events(data + encoder.finish(Usage(1, 1)))
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
        "response.output_item.done", "response.completed"]
    assert events[4]["input"] == "*** Begin" and events[-1]["response"]["output"][0]["input"] == "*** Begin"


def test_tool_choice_without_tools_is_not_sent_and_odd_shapes_are_400s():
    assert "tool_choice" not in chat_request({"model": "m", "input": "x", "tool_choice": "auto",
                                              "parallel_tool_calls": True})
    for name in ("text", "reasoning"):
        with pytest.raises(GatewayError) as caught:
            chat_request({"model": "m", "input": "x", name: "high"})
        assert caught.value.param == name
