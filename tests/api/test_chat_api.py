"""Chat completions through the live gateway with the official openai client, upstreams emulated."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider
from tests.polling import wait_until


@pytest.fixture
def two_providers(emulator):
    add_provider(emulator, "groq", ["g-a"], [{"model_id": "llama-3.3-70b", "context_window": 8000}])
    add_provider(emulator, "cerebras", ["c-a"], ["qwen-3"])
    add_chain("auto", ["groq/llama-3.3-70b", "cerebras/qwen-3"])


def test_chat_answers_with_usage_and_routing_headers(gateway, two_providers, emulator):
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}], temperature=0.2, seed=7
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    assert raw.headers["X-FreeLLM-Model"] == "llama-3.3-70b"
    assert raw.headers["X-FreeLLM-Attempts"] == "1"
    assert raw.headers["X-FreeLLM-Trail"] == "groq/llama-3.3-70b/groq-0 -> ok"
    sent = emulator.calls_for(provider="groq")[0]
    assert sent.body["model"] == "llama-3.3-70b"
    assert sent.body["temperature"] == 0.2 and sent.body["seed"] == 7


def test_stream_sends_several_chunks_usage_and_done(gateway, two_providers):
    stream = gateway.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "count to five please"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: count to five please"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_without_include_usage_sends_no_usage_chunk(gateway, two_providers):
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json={
        "model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {gateway.api_key}"}) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert all('"usage"' not in line for line in lines[:-1])


@pytest.mark.parametrize("bad_key", ["k;429=30", "k;500", "k;503", "k;hang"])
def test_fails_over_to_the_next_route(gateway, emulator, settings, bad_key):
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 1.0
    add_provider(emulator, "groq", [bad_key], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.status_code == 200
    assert raw.headers["X-FreeLLM-Provider"] == "gemini"
    assert int(raw.headers["X-FreeLLM-Attempts"]) == 2


def test_rate_limited_route_is_skipped_without_calling_it_again(gateway, emulator):
    add_provider(emulator, "groq", ["k;429=30"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    client = gateway.openai()
    for _ in range(3):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    # The 429 opened the breaker with Retry-After 30 s: later requests skip groq without a call.
    assert len(emulator.calls_for(provider="groq")) == 1
    assert len(emulator.calls_for(provider="gemini")) == 3


def test_keys_of_one_model_are_tried_before_the_next_model(gateway, emulator):
    # A 429 is the key's own: its sibling has quota of its own.
    add_provider(emulator, "groq", ["a;429", "b"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-FreeLLM-Provider"] == "groq"


def test_no_429_reaches_the_client_while_a_chain_member_has_capacity(gateway, emulator):
    add_provider(emulator, "groq", ["k;rpm=2"], [{"model_id": "llama", "rpm": 2}])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    client = gateway.openai()
    providers = [
        client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"n{i}"}]
        ).headers["X-FreeLLM-Provider"]
        for i in range(6)
    ]
    assert providers == ["groq", "groq", "gemini", "gemini", "gemini", "gemini"]
    # The gateway never called groq above its limit: the emulator answered every groq call with 200.
    assert [c.status for c in emulator.calls_for(provider="groq")] == [200, 200]


def test_all_routes_exhausted_is_a_429_that_says_why(gateway, emulator):
    add_provider(emulator, "groq", ["a;429=40", "b;429=50"], ["llama"])
    add_chain("auto", ["groq/llama"])
    client = gateway.openai()
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["Retry-After"] == "40"
    assert err.value.body["message"] == "2 routes checked: 2 rate-limited; soonest reset in ~40s"
    # Later: nothing is called, the answer still explains.
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["message"].startswith("2 routes checked: 2 cooling down; soonest reset in ~")
    assert len(emulator.calls_for(provider="groq")) == 2


def test_every_route_failing_is_a_502_and_hanging_a_504(gateway, emulator, settings):
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 0.5
    add_provider(emulator, "groq", ["a;500"], ["llama"])
    add_provider(emulator, "slow", ["a;hang"], ["m"])
    add_chain("broken", ["groq/llama"])
    add_chain("hung", ["slow/m"])
    client = gateway.openai()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_error"
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="hung", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 504


def test_upstream_400_goes_back_to_the_client_without_failover(gateway, emulator):
    add_provider(emulator, "groq", ["a;ctx=1"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    # ctx=1 makes groq answer "context too long": that rules the model out, and gemini serves.
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "a long enough prompt"}]
    )
    assert raw.headers["X-FreeLLM-Provider"] == "gemini"
    assert "context_length" in raw.headers["X-FreeLLM-Trail"]


def test_upstream_auth_failure_marks_the_key_invalid(gateway, emulator):
    from providers.models import ProviderKey

    add_provider(emulator, "groq", ["a;401", "b"], ["llama"])
    add_chain("auto", ["groq/llama"])
    client = gateway.openai()
    for _ in range(2):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert ProviderKey.objects.get(label="groq-0").status == ProviderKey.Status.INVALID
    assert len(emulator.calls_for(name="a")) == 1


def test_stream_failure_after_first_byte_ends_with_error_event_and_no_done(gateway, emulator):
    add_provider(emulator, "groq", ["a;drop=2"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json={
        "model": "auto", "stream": True, "messages": [{"role": "user", "content": "tell me a long story"}]},
        headers={"Authorization": f"Bearer {gateway.api_key}"}) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "stream_interrupted"
    assert any(json.loads(e).get("choices") for e in events[:-1])


def test_stream_failure_before_first_byte_fails_over(gateway, emulator):
    add_provider(emulator, "groq", ["a;drop=0"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    stream = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert stream.headers["X-FreeLLM-Provider"] == "gemini"
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == "Echo: hi"


def test_client_disconnect_cancels_the_upstream_stream(gateway, emulator):

    add_provider(emulator, "groq", ["a;gap=0.3"], ["llama"])
    add_chain("auto", ["groq/llama"])
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json={
        "model": "auto", "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]},
        headers={"Authorization": f"Bearer {gateway.api_key}"}) as resp:
        next(resp.iter_lines())
    assert wait_until(lambda: emulator.calls_for(provider="groq")[0].disconnected, interval=0.05)


def test_request_rejected_by_upstream_goes_back_without_failover(gateway, emulator):
    add_provider(emulator, "groq", ["a;fail=1:400"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["X-FreeLLM-Attempts"] == "1"
    assert emulator.calls_for(provider="gemini") == []


def test_attempts_stop_at_the_configured_maximum(gateway, emulator, settings):
    settings.FREELLM_MAX_ATTEMPTS = 2
    add_provider(emulator, "groq", ["a;429", "b;429", "c;429"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    with pytest.raises(openai.APIStatusError) as err:
        gateway.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.response.headers["X-FreeLLM-Attempts"] == "2"
    assert "stopped after 2 attempts" in err.value.body["message"]
    assert len(emulator.calls) == 2


def test_overall_time_budget_bounds_the_request(gateway, emulator, settings):
    settings.FREELLM_TIME_BUDGET = 1.0
    add_provider(emulator, "groq", ["a;hang", "b;hang", "c;hang"], ["llama"])
    add_chain("auto", ["groq/llama"])
    with pytest.raises(openai.APIStatusError) as err:
        gateway.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 504
    # The first call used the whole budget: the other keys were never called.
    assert len(emulator.calls) == 1
