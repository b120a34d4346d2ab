"""Context handoff: one system message, fits the new model's window, recent turns verbatim, idempotent."""

from __future__ import annotations

import json

from routing.handoff import HANDOFF_MARKER, build_handoff, is_handoff_message
from routing.tokens import estimate_tokens

SYSTEM = {"role": "system", "content": "You are a travel agent. Answer briefly."}


def conversation(turns: int, filler: int = 0) -> list[dict]:
    messages = [SYSTEM]
    for i in range(turns):
        messages.append(
            {"role": "user", "content": f"Question {i}: can you plan day {i}? " + "detail " * filler}
        )
        messages.append(
            {"role": "assistant", "content": f"Answer {i}: visit museum {i}. " + "words " * filler}
        )
    messages.append({"role": "user", "content": "My budget is 500 euros. What about the last day?"})
    return messages


def handoffs(messages: list[dict]) -> list[dict]:
    return [m for m in messages if is_handoff_message(m)]


def test_exactly_one_handoff_after_leading_system_messages():
    messages = [SYSTEM, {"role": "system", "content": "Second rule."}, *conversation(2)[1:]]
    out = build_handoff(
        messages,
        previous_model="groq/llama",
        new_model="cerebras/qwen",
        context_window=None,
        reserve_tokens=0,
    )
    assert len(handoffs(out)) == 1
    assert out[:2] == messages[:2]
    note = out[2]
    assert note["role"] == "system" and note["content"].startswith(HANDOFF_MARKER)
    assert "groq/llama" in note["content"] and "latest user message wins" in note["content"]
    # Everything fits: all turns verbatim after the note, and the input list is untouched.
    assert out[3:] == messages[2:]
    assert not handoffs(messages)


def test_no_leading_system_message_puts_note_first():
    messages = conversation(1)[1:]
    out = build_handoff(
        messages, previous_model="a/x", new_model="b/y", context_window=None, reserve_tokens=0
    )
    assert is_handoff_message(out[0]) and out[1:] == messages


def test_idempotent_never_injects_twice():
    once = build_handoff(
        conversation(3), previous_model="a/x", new_model="b/y", context_window=None, reserve_tokens=0
    )
    twice = build_handoff(once, previous_model="b/y", new_model="c/z", context_window=None, reserve_tokens=0)
    assert twice == once and len(handoffs(twice)) == 1


def test_structured_summary_has_goals_answers_facts():
    out = build_handoff(
        conversation(2), previous_model="a/x", new_model="b/y", context_window=None, reserve_tokens=0
    )
    text = handoffs(out)[0]["content"]
    assert "Goals" in text and "can you plan day 0?" in text
    assert "Answers and decisions" in text and "Answer 1: visit museum 1." in text
    summary_only = build_handoff(
        [
            SYSTEM,
            {"role": "user", "content": "I am vegetarian. Suggest a restaurant."},
            {"role": "assistant", "content": "Try Ao 26."},
            {"role": "user", "content": "Another one?"},
        ],
        previous_model="a/x",
        new_model="b/y",
        context_window=None,
        reserve_tokens=0,
    )
    text = handoffs(summary_only)[0]["content"]
    assert "Facts the user gave:\n- I am vegetarian." in text
    assert "- Suggest a restaurant." in text.split("Facts")[0]


def test_fits_the_window_and_keeps_recent_turns_verbatim():
    messages = conversation(40, filler=40)
    full = estimate_tokens(messages)
    window, reserve = 4096, 1000
    assert full > window  # the point of the test: it cannot all fit
    out = build_handoff(
        messages,
        previous_model="groq/llama-3.3-70b",
        new_model="small/model",
        context_window=window,
        reserve_tokens=reserve,
    )
    assert estimate_tokens(out) <= window - reserve
    assert len(handoffs(out)) == 1
    assert out[0] == SYSTEM
    kept = out[2:]
    # A verbatim suffix of the conversation, starting at a user turn, ending with the latest message.
    assert kept == messages[len(messages) - len(kept) :]
    assert kept[0]["role"] == "user" and kept[-1] == messages[-1]
    assert 3 <= len(kept) < len(messages) - 1
    note = handoffs(out)[0]["content"]
    assert "oldest messages are only in this summary" in note
    # The task itself (the first ask) survives even when the summary had to shrink.
    assert "Question 0" in note


def test_tool_calls_and_results_are_summarised():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Lisbon"})},
    }
    pending = {
        "id": "call_2",
        "type": "function",
        "function": {"name": "book_hotel", "arguments": json.dumps({"city": "Porto"})},
    }
    messages = [
        SYSTEM,
        {"role": "user", "content": "What's the weather in Lisbon? " + "context " * 400},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22°C and sunny"},
        {"role": "assistant", "content": "It is 22°C and sunny in Lisbon. " + "more " * 400},
        {"role": "user", "content": "Book me a hotel in Porto."},
        {"role": "assistant", "content": None, "tool_calls": [pending]},
        {"role": "user", "content": "Actually, make it Faro."},
    ]
    out = build_handoff(
        messages, previous_model="a/x", new_model="b/y", context_window=1200, reserve_tokens=200
    )
    assert estimate_tokens(out) <= 1000
    note = handoffs(out)[0]["content"]
    assert 'get_weather({"city":"Lisbon"}) → 22°C and sunny' in note
    assert 'book_hotel({"city":"Porto"}) → (no result yet: open)' in note
    # The first exchange (with the tool result) was dropped as a whole: no orphaned tool message.
    assert not any(m.get("role") == "tool" for m in out)
    assert out[-1] == messages[-1]


def test_latest_exchange_is_kept_even_when_nothing_else_fits():
    messages = conversation(3, filler=300)
    out = build_handoff(
        messages, previous_model="a/x", new_model="b/y", context_window=800, reserve_tokens=200
    )
    assert out[-1] == messages[-1] and out[0] == SYSTEM and len(handoffs(out)) == 1
    assert len(out) == 3
