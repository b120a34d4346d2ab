"""Token estimates used for quota reservations."""

from __future__ import annotations

from routing.tokens import estimate_request_tokens, estimate_tokens


def test_plain_text_is_about_four_characters_a_token():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) == 100
    # Non-ASCII text (CJK) counts a token per character: a safe upper bound.
    assert estimate_tokens("日本語のテキスト") == 8


def test_chat_messages_add_their_overhead_and_parts():
    messages = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 40}, {"type": "image_url", "image_url": {"url": "data:..."}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]},
    ]
    text = estimate_tokens(messages)
    assert text == 3 + (4 + 10) + (4 + 10 + 800) + (4 + 4 + 1 + 2)


def test_embedding_inputs():
    assert estimate_tokens(["abcd", "abcdabcd"]) == 3
    assert estimate_tokens([1, 2, 3, 4]) == 4  # token ids


def test_request_estimate_caps_the_output_reserve(settings):
    settings.FREELLM_OUTPUT_RESERVE = 2000
    messages = [{"role": "user", "content": "hi"}]
    prompt = estimate_tokens(messages)
    assert estimate_request_tokens({"messages": messages}) == prompt + 2000
    assert estimate_request_tokens({"messages": messages, "max_tokens": 50}) == prompt + 50
    assert estimate_request_tokens({"messages": messages, "max_completion_tokens": 9000}) == prompt + 2000
    assert estimate_request_tokens({"messages": messages, "max_tokens": 50}, output_reserve=20) == prompt + 20
    assert estimate_request_tokens({"input": "abcd" * 10}, output_reserve=0) == 10
    with_tools = estimate_request_tokens({"messages": messages, "tools": [{"type": "function", "function": {"name": "x" * 400}}]})
    assert with_tools > prompt + 2000 + 100
