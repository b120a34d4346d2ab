"""routing/toolcalls.py: text tool calls rescued, arguments repaired, <think> split out, empty answers refused,
the same in a whole answer and in a stream cut anywhere."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from providers.adapters.base import ErrorKind, UpstreamError
from providers.adapters.transport import assemble_completion
from routing.toolcalls import (
    StreamRescuer,
    find_text_tool_calls,
    repair_arguments,
    rescue_completion,
    split_think,
    tool_spec,
)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"],
}}}  # fmt: skip
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"],
}}}  # fmt: skip
TOOLS = {"tools": [WEATHER, SEARCH]}
SPEC = tool_spec(TOOLS)
PARIS = {"city": "Paris"}

TEXT_FORMS = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "hermes-parameters": '<tool_call>{"name": "get_weather", "parameters": {"city": "Paris"}}</tool_call>',
    "hermes-unclosed": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "function-json": '<function=get_weather>{"city": "Paris"}</function>',
    "function-parameters": "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>",
    "qwen3-coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n"
                   "</tool_call>",
    "kimi": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
            '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>',
    "kimi-bare": '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}'
                 "<|tool_call_end|>",
    "deepseek-v3": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                   '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    "deepseek-v3.1": '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}'
                     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "bare-named": '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "bare-arguments": '{"city": "Paris"}',
    "bare-fenced": '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    "bare-double-encoded": '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
}  # fmt: skip


def completion(content, *, tool_calls=None, reasoning=None, finish="stop") -> dict:
    message = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning"] = reasoning
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def only_call(message: dict) -> tuple[str, dict]:
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    return call["function"]["name"], json.loads(call["function"]["arguments"])


# --- whole answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", TEXT_FORMS)
def test_each_text_form_becomes_a_real_tool_call(form):
    fixed = rescue_completion(completion(TEXT_FORMS[form]), SPEC)

    choice = fixed["choices"][0]
    assert only_call(choice["message"]) == ("get_weather", PARIS)
    assert choice["message"]["content"] is None
    assert choice["finish_reason"] == "tool_calls"


def test_text_around_a_call_stays_content_and_several_calls_are_kept_in_order():
    text = ('Let me look that up.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
            '<tool_call>{"name": "search", "arguments": {"query": "Paris events"}}</tool_call>')

    message = rescue_completion(completion(text), SPEC)["choices"][0]["message"]

    assert message["content"] == "Let me look that up."
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]]
    assert calls == [("get_weather", PARIS), ("search", {"query": "Paris events"})]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


def test_parameter_values_follow_the_schema_types():
    text = "<function=get_weather><parameter=city>Paris</parameter><parameter=days>3</parameter></function>"

    name, arguments = only_call(rescue_completion(completion(text), SPEC)["choices"][0]["message"])

    assert arguments == {"city": "Paris", "days": 3}


@pytest.mark.parametrize("body", [
    {},  # no tools declared
    {**TOOLS, "tool_choice": "none"},
])
def test_nothing_is_rescued_when_the_request_allows_no_tool_call(body):
    for text in TEXT_FORMS.values():
        fixed = rescue_completion(completion(text), tool_spec(body))
        assert fixed["choices"][0]["message"]["content"] == text
        assert "tool_calls" not in fixed["choices"][0]["message"]


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',  # not a declared tool
    "<function=rm_rf>{}</function>",
    '{"temperature": 21}',  # fits no tool's schema
    '{"city": "Paris", "mood": "sunny"}',  # a key the schema does not have
    '{"query": "x", "city": "y"}',
    '{"days": 3}',  # required city missing
    '{"city": 7}',  # wrong type
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}, "and some text"]',
    '{"name": "get_weather", "arguments": {"city": "Paris"}} and then I said more',
    "The <function=...> syntax is how some models call tools.",
])
def test_what_is_not_a_call_of_a_declared_tool_stays_text(text):
    fixed = rescue_completion(completion(text), SPEC)

    assert fixed["choices"][0]["message"]["content"] == text
    assert "tool_calls" not in fixed["choices"][0]["message"]
    assert fixed["choices"][0]["finish_reason"] == "stop"


def test_an_answer_matching_two_schemas_is_ambiguous_and_stays_text():
    twins = tool_spec({"tools": [WEATHER, {"type": "function", "function": {
        "name": "get_forecast", "parameters": WEATHER["function"]["parameters"]}}]})

    assert find_text_tool_calls('{"city": "Paris"}', twins) is None
    assert find_text_tool_calls('{"name": "get_forecast", "arguments": {"city": "Paris"}}', twins)[1][0][
        "function"]["name"] == "get_forecast"


def test_a_bare_json_answer_is_the_answer_when_json_was_asked_for():
    spec = tool_spec({**TOOLS, "response_format": {"type": "json_object"}})

    assert find_text_tool_calls('{"city": "Paris"}', spec) is None
    # Tags are still unmistakable.
    assert find_text_tool_calls(TEXT_FORMS["hermes"], spec) is not None


def test_legacy_functions_count_as_declared_tools():
    spec = tool_spec({"functions": [WEATHER["function"]]})

    assert find_text_tool_calls(TEXT_FORMS["function-json"], spec)[1][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(("arguments", "repaired"), [
    ('"{\\"city\\": \\"Paris\\"}"', '{"city": "Paris"}'),  # double-encoded
    ('{"city": "Paris"}', '{"city": "Paris"}'),
    ({"city": "Paris"}, '{"city": "Paris"}'),
    ("", "{}"),
    (None, "{}"),
    ('"just a string"', '"just a string"'),
    ("{not json", "{not json"),
])
def test_arguments_are_repaired(arguments, repaired):
    assert repair_arguments(arguments) == repaired


def test_real_tool_calls_get_their_double_encoded_arguments_repaired():
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(json.dumps(PARIS))}}

    message = rescue_completion(completion(None, tool_calls=[call], finish="tool_calls"), SPEC)["choices"][0]["message"]

    assert message["tool_calls"][0]["id"] == "call_1"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == PARIS


@pytest.mark.parametrize(("content", "reasoning", "rest"), [
    ("<think>Paris is in France.</think>\n\nIt is sunny.", "Paris is in France.", "It is sunny."),
    ("\n<think>\nhmm\n</think>It is sunny.", "hmm", "It is sunny."),
    ("<think>never closed", "never closed", ""),
    ("No thinking <think>here</think>", None, "No thinking <think>here</think>"),
])
def test_a_leading_think_block_is_split_off(content, reasoning, rest):
    assert split_think(content) == (reasoning, rest)


def test_think_moves_to_reasoning_and_a_call_after_it_is_rescued():
    text = "<think>The user wants weather.</think>\n" + TEXT_FORMS["hermes"]

    message = rescue_completion(completion(text, reasoning="earlier"), SPEC)["choices"][0]["message"]

    assert message["reasoning"] == "earlier\nThe user wants weather."
    assert only_call(message) == ("get_weather", PARIS)


@pytest.mark.parametrize("answer", [
    completion(None),
    completion(""),
    completion("  \n"),
    completion(None, tool_calls=[]),
])
def test_an_empty_answer_is_an_upstream_failure(answer):
    with pytest.raises(UpstreamError) as caught:
        rescue_completion(answer, SPEC)

    assert caught.value.kind == ErrorKind.EMPTY and caught.value.kind.fails_over


@pytest.mark.parametrize("answer", [
    completion("", reasoning="thought a lot"),
    completion("<think>only thoughts</think>"),
    completion("", finish="length"),
    completion(None, finish="content_filter"),
])
def test_reasoning_a_length_cut_or_a_filter_is_not_an_empty_answer(answer):
    rescue_completion(answer, SPEC)


@pytest.mark.parametrize("original", [
    completion(TEXT_FORMS["hermes"]),
    completion("<think>a plan</think>the answer"),
    completion(None, tool_calls=[{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": json.dumps(json.dumps(PARIS))}}],
               finish="tool_calls"),
], ids=["text tool call", "inline reasoning", "double-encoded arguments"])
def test_the_input_is_not_modified(original):
    snapshot = json.dumps(original)

    rescue_completion(original, SPEC)

    assert json.dumps(original) == snapshot


# --- streams ---------------------------------------------------------------------------------------


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


def text_stream(text: str, cuts: list[int], *, finish: str = "stop") -> list[dict]:
    chunks = [chunk({"role": "assistant", "content": ""})]
    bounds = [0, *sorted(set(cuts)), len(text)]
    chunks += [chunk({"content": text[a:b]}) for a, b in itertools.pairwise(bounds) if b > a]
    chunks.append(chunk(finish=finish))
    chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
    return chunks


def run_stream(chunks: list[dict], spec=SPEC) -> tuple[list[dict], dict]:
    rescuer = StreamRescuer(spec)
    out = []
    for item in chunks:
        out.extend(rescuer.feed(item))
    out.extend(rescuer.close())
    assert rescuer.begun
    return out, assemble_completion(out)[0]


def cut_points(text: str, seed: int) -> list[list[int]]:
    """Every single cut, one cut per character, and a few random multi-cuts."""
    rng = random.Random(seed)
    cuts = [[i] for i in range(1, len(text))] + [list(range(1, len(text)))]
    cuts += [rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(2, 6))) for _ in range(20)]
    return cuts


@pytest.mark.parametrize("form", TEXT_FORMS)
def test_a_streamed_text_call_is_rescued_wherever_the_chunks_are_cut(form):
    text = TEXT_FORMS[form]
    for cuts in cut_points(text, seed=len(form)):
        out, assembled = run_stream(text_stream(text, cuts))
        choice = assembled["choices"][0]
        assert only_call(choice["message"]) == ("get_weather", PARIS), cuts
        assert not choice["message"].get("content"), cuts
        assert choice["finish_reason"] == "tool_calls"
        # Nothing of the call leaked out as text, and the usage chunk still comes last.
        assert all(not (c["choices"] and c["choices"][0]["delta"].get("content")) for c in out)
        assert out[-1]["usage"]["total_tokens"] == 12 and out[-1]["choices"] == []


@pytest.mark.parametrize("text", [
    "Plain answer <b>bold</b> with < and <t and {braces} and a trailing <",
    '{"temperature": 21} is the JSON you asked for',
    '```python\nprint("hi")\n```',
    '[1, 2, 3]',
    "The <function=...> syntax is how some models call tools.",
    "<thinking is not a tag",
])
def test_streamed_text_that_is_no_call_comes_through_unchanged(text):
    for cuts in cut_points(text, seed=3):
        _, assembled = run_stream(text_stream(text, cuts))
        message = assembled["choices"][0]["message"]
        assert message["content"] == text, cuts
        assert "tool_calls" not in message
        assert assembled["choices"][0]["finish_reason"] == "stop"


def test_plain_text_is_not_held_back():
    rescuer = StreamRescuer(SPEC)
    out = rescuer.feed(chunk({"content": "Hello there, "}))
    assert out[0]["choices"][0]["delta"]["content"] == "Hello there, "
    # A possible marker start is held only as long as it could still be one.
    assert rescuer.feed(chunk({"content": "see <"}))[0]["choices"][0]["delta"]["content"] == "see "
    assert rescuer.feed(chunk({"content": "br>"}))[0]["choices"][0]["delta"]["content"] == "<br>"


def test_json_that_is_clearly_no_call_is_released_once_it_closes():
    rescuer = StreamRescuer(SPEC)
    assert rescuer.feed(chunk({"content": '{"temperature": '})) == []
    released = rescuer.feed(chunk({"content": '21} and more'}))
    assert released[0]["choices"][0]["delta"]["content"] == '{"temperature": 21} and more'


def test_text_before_a_streamed_call_goes_out_at_once():
    rescuer = StreamRescuer(SPEC)
    first = rescuer.feed(chunk({"content": "Checking the weather. <tool_"}))
    assert first[0]["choices"][0]["delta"]["content"] == "Checking the weather. "
    assert rescuer.feed(chunk({"content": 'call>{"name": "get_weather", "arguments": {"city": "Paris"}}'})) == []
    out = rescuer.feed(chunk(finish="stop"))
    assembled = assemble_completion(first + out)[0]
    assert assembled["choices"][0]["message"]["content"] == "Checking the weather. "
    assert only_call(assembled["choices"][0]["message"]) == ("get_weather", PARIS)


def test_a_streamed_think_block_becomes_reasoning_deltas():
    text = "<think>The user wants the weather.</think>\n\nIt is sunny in Paris."
    for cuts in cut_points(text, seed=5):
        out, assembled = run_stream(text_stream(text, cuts), tool_spec({}))
        message = assembled["choices"][0]["message"]
        assert message["reasoning"] == "The user wants the weather.", cuts
        assert message["content"] == "It is sunny in Paris.", cuts


def test_reasoning_then_a_call_in_one_stream():
    text = "<think>Weather, so a tool.</think>" + TEXT_FORMS["kimi"]
    for cuts in cut_points(text, seed=7)[::5]:
        _, assembled = run_stream(text_stream(text, cuts))
        message = assembled["choices"][0]["message"]
        assert message["reasoning"] == "Weather, so a tool."
        assert only_call(message) == ("get_weather", PARIS)


def test_streamed_real_calls_pass_and_double_encoded_arguments_are_repaired():
    doubled = json.dumps(json.dumps(PARIS))
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        *[chunk({"tool_calls": [{"index": 0, "function": {"arguments": doubled[i:i + 4]}}]})
          for i in range(0, len(doubled), 4)],
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "search", "arguments": '{"query"'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': "x"}'}}]}),
        chunk(finish="tool_calls"),
    ]
    out, assembled = run_stream(chunks)

    calls = assembled["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("call_a", "get_weather", PARIS), ("call_b", "search", {"query": "x"})]
    # The well-formed call was not held back.
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("index") == 1
               and c["choices"][0]["finish_reason"] is None for c in out)


def test_held_text_is_plain_text_once_a_real_call_arrives():
    chunks = [
        chunk({"content": "<tool_call>maybe"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}),
        chunk(finish="tool_calls"),
    ]
    _, assembled = run_stream(chunks)

    message = assembled["choices"][0]["message"]
    assert message["content"] == "<tool_call>maybe"
    assert only_call(message) == ("get_weather", PARIS)


@pytest.mark.parametrize("chunks", [
    [chunk({"role": "assistant", "content": ""}), chunk(finish="stop")],
    [chunk({"role": "assistant", "content": ""}), chunk({"content": " \n"}), chunk(finish="stop")],
])
def test_an_empty_stream_fails_at_its_finish(chunks):
    rescuer = StreamRescuer(SPEC)
    with pytest.raises(UpstreamError) as caught:
        for item in chunks:
            rescuer.feed(item)
    assert caught.value.kind == ErrorKind.EMPTY


def test_a_stream_that_ends_without_anything_fails_at_close():
    rescuer = StreamRescuer(SPEC)
    rescuer.feed(chunk({"role": "assistant", "content": ""}))
    assert not rescuer.begun
    with pytest.raises(UpstreamError):
        rescuer.close()


def test_begun_turns_on_with_held_output_too():
    rescuer = StreamRescuer(SPEC)
    assert rescuer.feed(chunk({"content": "<tool_call>"})) == []
    assert rescuer.begun


def test_reasoning_deltas_count_as_output_and_pass_through():
    out, assembled = run_stream([chunk({"reasoning": "hmm"}), chunk({"content": "Hi"}), chunk(finish="stop")])
    assert assembled["choices"][0]["message"]["reasoning"] == "hmm"
    assert assembled["choices"][0]["message"]["content"] == "Hi"


@pytest.mark.parametrize("text", [
    'Let me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
    '<tool_call>{"name": "search", "arguments": {"query": "q"}}</tool_call>',
    "<think>\n  plan: call it\n</think>\n\n<function=search><parameter=query>a b</parameter></function>",
    "Sure: <|tool_call_begin|>functions.search:1<|tool_call_argument_begin|>{\"query\": \"z\"}<|tool_call_end|>",
    "<tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call> so no call",
    "   leading blanks, then <br> text",
])
def test_a_stream_amounts_to_the_same_as_the_whole_answer(text):
    def summary(message: dict, finish: str) -> tuple:
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or ()]
        # Blanks around a call may differ: a stream cannot take back the blank it sent before the call.
        return ((message.get("content") or "").strip() or None, message.get("reasoning"), calls, finish)

    whole = rescue_completion(completion(text), SPEC)["choices"][0]
    expected = summary(whole["message"], whole["finish_reason"])
    for cuts in cut_points(text, seed=11)[::3]:
        _, assembled = run_stream(text_stream(text, cuts))
        choice = assembled["choices"][0]
        assert summary(choice["message"], choice["finish_reason"]) == expected, cuts
