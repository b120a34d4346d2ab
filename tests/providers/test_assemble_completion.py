"""assemble_completion: a stream of chat.completion.chunk dicts → the one chat.completion it amounts to."""

from __future__ import annotations

import json

import pytest

from providers.adapters.base import ErrorKind, UpstreamError, Usage
from providers.adapters.transport import CompletionAssembler, assemble_completion


def chunk(*choices: dict, **extra) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "llama",
            "choices": list(choices), **extra}


def delta(content=None, *, index: int = 0, finish: str | None = None, **fields) -> dict:
    body = dict(fields)
    if content is not None:
        body["content"] = content
    return {"index": index, "delta": body, "finish_reason": finish, "logprobs": None}


USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_text_deltas_become_one_message_with_the_stream_identity():
    body, usage = assemble_completion([
        chunk(delta("", role="assistant"), system_fingerprint="fp_1"),
        chunk(delta("Hello")),
        chunk(delta(", world")),
        chunk(delta(finish="stop")),
        chunk(usage=USAGE),
    ])

    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"},
                     "finish_reason": "stop", "logprobs": None}],
        "system_fingerprint": "fp_1",
        "usage": USAGE,
    }
    assert usage == Usage(12, 5)


def test_tool_call_fragments_merge_by_index_with_arguments_concatenated():
    body, _ = assemble_completion([
        chunk(delta(role="assistant", content="")),
        chunk(delta(tool_calls=[{"index": 0, "id": "call_a", "type": "function",
                                 "function": {"name": "get_weather", "arguments": ""}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}])),
        chunk(delta(tool_calls=[{"index": 1, "id": "call_b", "type": "function",
                                 "function": {"name": "get_time", "arguments": '{"tz"'}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}])),
        chunk(delta(tool_calls=[{"index": 1, "function": {"arguments": ': "CET"}'}}])),
        chunk(delta(finish="tool_calls")),
    ])

    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]


def test_a_tool_call_keeps_its_extra_fields_and_gets_an_id_and_arguments_when_the_stream_gave_none():
    # Gemini's thought signature rides in extra_content; some servers send no id and no arguments at all.
    signature = {"google": {"thought_signature": "sig"}}
    body, _ = assemble_completion([
        chunk(delta(tool_calls=[{"index": 0, "function": {"name": "ping"}, "extra_content": signature}])),
        chunk(delta(finish="tool_calls")),
    ])

    [call] = body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "ping", "arguments": "{}"}
    assert call["extra_content"] == signature


def test_tool_call_fragments_without_an_index_start_a_call_when_named_and_continue_it_otherwise():
    body, _ = assemble_completion([
        chunk(delta(tool_calls=[{"id": "a", "function": {"name": "one", "arguments": '{"x"'}}])),
        chunk(delta(tool_calls=[{"function": {"arguments": ": 1}"}}])),
        chunk(delta(tool_calls=[{"id": "b", "function": {"name": "two", "arguments": "{}"}}])),
        chunk(delta(finish="tool_calls")),
    ])

    calls = body["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", "one", '{"x": 1}'), ("b", "two", "{}")]


def test_arguments_sent_as_an_object_become_json_text():
    body, _ = assemble_completion([
        chunk(delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": {"x": 1}}}])),
    ])

    assert json.loads(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"x": 1}


def test_choices_are_assembled_per_index_and_listed_in_index_order():
    body, _ = assemble_completion([
        chunk(delta("B", index=1, role="assistant"), delta("A", index=0, role="assistant")),
        chunk(delta("b", index=1)),
        chunk(delta("a", index=0, finish="stop")),
        chunk(delta(index=1, finish="length")),
    ])

    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "Aa", "stop"), (1, "Bb", "length")]


def test_usage_comes_from_the_final_usage_only_chunk_and_none_without_one():
    chunks = [chunk(delta("hi", role="assistant")), chunk(delta(finish="stop"))]

    body, usage = assemble_completion(chunks)
    assert usage is None and "usage" not in body

    detailed = {**USAGE, "completion_tokens_details": {"reasoning_tokens": 3}}
    body, usage = assemble_completion([*chunks, chunk(usage=detailed)])
    assert body["usage"] == detailed and usage == Usage(12, 5)


def test_the_last_usage_counts_when_a_provider_repeats_a_running_total():
    body, usage = assemble_completion([
        chunk(delta("a", role="assistant"), usage={"prompt_tokens": 12, "completion_tokens": 1}),
        chunk(delta("b", finish="stop"), usage={"prompt_tokens": 12, "completion_tokens": 2}),
        chunk(usage=None),
    ])

    assert usage == Usage(12, 2) and body["usage"]["completion_tokens"] == 2


def test_an_empty_answer_is_empty_content_not_null():
    body, _ = assemble_completion([chunk(delta("", role="assistant")), chunk(delta(finish="stop"))])

    assert body["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_a_content_filter_stop_keeps_the_text_so_far_and_its_finish_reason():
    body, _ = assemble_completion([
        chunk(delta("Here is how", role="assistant")),
        chunk(delta(finish="content_filter")),
    ])

    [choice] = body["choices"]
    assert choice["message"]["content"] == "Here is how" and choice["finish_reason"] == "content_filter"


def test_a_refusal_leaves_content_null():
    body, _ = assemble_completion([
        chunk(delta(role="assistant", refusal="I can't")),
        chunk(delta(refusal=" help with that.", finish="stop")),
    ])

    assert body["choices"][0]["message"] == {"role": "assistant", "content": None,
                                             "refusal": "I can't help with that."}


def test_reasoning_fields_are_concatenated_beside_the_content():
    body, _ = assemble_completion([
        chunk(delta(role="assistant", content=None, reasoning="First, ")),
        chunk(delta(content=None, reasoning="think.", reasoning_content="R1 ")),
        chunk(delta(reasoning_content="style")),
        chunk(delta("Answer.", finish="stop")),
    ])

    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "Answer.", "reasoning": "First, think.", "reasoning_content": "R1 style"}


def test_logprobs_of_every_chunk_are_kept_in_order():
    def logprob(token: str) -> dict:
        return {"content": [{"token": token, "logprob": -0.1, "bytes": None, "top_logprobs": []}], "refusal": None}

    body, _ = assemble_completion([
        chunk({**delta("Hi", role="assistant"), "logprobs": logprob("Hi")}),
        chunk({**delta("!", finish="stop"), "logprobs": logprob("!")}),
    ])

    assert [t["token"] for t in body["choices"][0]["logprobs"]["content"]] == ["Hi", "!"]


def test_content_parts_and_text_mixed_become_one_list_of_parts():
    # Mistral's thinking models stream a list of parts for the thinking, then plain text.
    thinking = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}]
    body, _ = assemble_completion([
        chunk(delta("", role="assistant")),
        chunk(delta(thinking)),
        chunk(delta("Do")),
        chunk(delta("ne.", finish="stop")),
    ])

    assert body["choices"][0]["message"]["content"] == [*thinking, {"type": "text", "text": "Done."}]


def test_a_stream_that_never_said_why_it_stopped_reads_as_a_normal_stop():
    text, _ = assemble_completion([chunk(delta("ok", role="assistant"))])
    calls, _ = assemble_completion([chunk(delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f"}}]))])

    assert text["choices"][0]["finish_reason"] == "stop"
    assert calls["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_without_any_choice_is_a_server_error():
    with pytest.raises(UpstreamError) as caught:
        assemble_completion([chunk(usage=USAGE)])

    assert caught.value.kind is ErrorKind.SERVER


def test_chunks_are_not_modified():
    chunks = [
        chunk(delta("a", role="assistant", tool_calls=[{"index": 0, "id": "x", "function": {"name": "f",
                                                                                          "arguments": "{"}}])),
        chunk(delta("b", tool_calls=[{"index": 0, "function": {"arguments": "}"}}], finish="tool_calls")),
    ]
    before = json.dumps(chunks)

    assemble_completion(chunks)

    assert json.dumps(chunks) == before


def test_the_assembler_counts_generated_characters_and_reports_usage_as_it_goes():
    assembler = CompletionAssembler()
    assembler.feed(chunk(delta("12345", role="assistant", reasoning="678")))
    assembler.feed(chunk(delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}])))

    assert assembler.generated_chars == 10
    assert assembler.usage is None
    assembler.feed(chunk(usage=USAGE))
    assert assembler.usage == Usage(12, 5)
