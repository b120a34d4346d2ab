"""A request longer than every model's context window: OpenAI's 400 `context_length_exceeded`, which clients
(LangChain, LiteLLM, coding agents) answer by trimming the conversation; 422 stays for other gaps."""

from __future__ import annotations

import re

import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider

LONG = [{"role": "user", "content": "word " * 12000}]  # ~15,000 tokens by the gateway's estimate


@pytest.fixture
def small_windows(emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", "context_window": 8000}])
    add_provider(emulator, "mistral", ["m"], [{"model_id": "small", "context_window": 10000,
                                               "supports_vision": True}])
    add_chain("auto", ["groq/llama", "mistral/small"])


def overflow(call) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    return caught.value.body


@pytest.mark.parametrize("stream", [False, True])
def test_a_chain_whose_windows_are_all_too_small_answers_400_before_any_call(gateway, emulator, small_windows,
                                                                            stream):
    client = gateway.openai()
    error = overflow(lambda: client.chat.completions.create(model="auto", messages=LONG, stream=stream))

    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert "largest context window of the 2 models checked for 'auto' is 10,000 tokens (mistral/small)" in (
        error["message"])
    assert re.search(r"estimated ~1\d,\d{3} tokens", error["message"])
    assert emulator.calls == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_explicit_model_too_small_answers_400(gateway, emulator, small_windows, stream):
    client = gateway.openai()
    error = overflow(lambda: client.chat.completions.create(model="groq/llama", messages=LONG, stream=stream))

    assert error["code"] == "context_length_exceeded"
    assert "1 model checked for 'groq/llama' is 8,000 tokens (groq/llama)" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_upstreams_refusing_it_as_too_long_answer_400_too(gateway, emulator, stream):
    # Windows not configured: gating lets the request through, each upstream says "context too long".
    add_provider(emulator, "groq", ["g;ctx=100"], ["llama"])
    add_provider(emulator, "mistral", ["m;ctx=100"], [{"model_id": "small", "context_window": 200_000}])
    add_provider(emulator, "gemini", ["x"], [{"model_id": "flash", "context_window": 1000}])
    add_chain("auto", ["groq/llama", "mistral/small", "gemini/flash"])
    client = gateway.openai()

    error = overflow(lambda: client.chat.completions.create(model="auto", messages=LONG, stream=stream))

    assert error["code"] == "context_length_exceeded"
    # Gated out (gemini) and refused by the upstream (groq, mistral) all count; the largest known window is named.
    assert "3 models checked for 'auto' is 200,000 tokens (mistral/small)" in error["message"]
    assert [c.provider for c in emulator.calls] == ["groq", "mistral"]


def test_windows_unknown_everywhere_are_said_so(gateway, emulator):
    add_provider(emulator, "groq", ["g;ctx=100"], ["llama"])
    add_chain("auto", ["groq/llama"])

    error = overflow(lambda: gateway.openai().chat.completions.create(model="auto", messages=LONG))

    assert error["code"] == "context_length_exceeded"
    assert "none of the 1 model checked for 'auto' has a configured context window" in error["message"]


def test_a_mix_of_too_small_and_missing_capability_stays_422(gateway, emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", "context_window": 200_000}])
    add_provider(emulator, "mistral", ["m"], [{"model_id": "small", "context_window": 8000,
                                               "supports_vision": True}])
    add_chain("auto", ["groq/llama", "mistral/small"])
    image_turn = [{"role": "user", "content": [
        {"type": "text", "text": "word " * 12000},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]
    # groq/llama: no vision; mistral/small: vision but too small. Trimming alone would not help.
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        gateway.openai().chat.completions.create(model="auto", messages=image_turn)

    assert caught.value.body["code"] == "no_capable_model"


def test_one_model_too_small_and_another_rate_limited_is_a_429(gateway, emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", "context_window": 8000}])
    add_provider(emulator, "mistral", ["m;429=30"], [{"model_id": "large", "context_window": 200_000}])
    add_chain("auto", ["groq/llama", "mistral/large"])

    with pytest.raises(openai.RateLimitError) as caught:
        gateway.openai().chat.completions.create(model="auto", messages=LONG)

    assert caught.value.body["code"] == "all_routes_exhausted"
    assert caught.value.response.headers["Retry-After"] == "30"
