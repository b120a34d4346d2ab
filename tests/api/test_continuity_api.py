"""Sticky sessions, context handoff and capability gating through the live gateway (openai client, emulator)."""

from __future__ import annotations

import openai
import pytest

from analytics.models import StickySession as StickySessionRow
from routing.handoff import HANDOFF_MARKER
from routing.tokens import estimate_tokens
from tests.fixtures_gateway import add_chain, add_provider, reorder_chain

SYSTEM = {"role": "system", "content": "You are a concise travel planner."}


def set_key(slug: str, secret: str) -> None:
    from providers.models import ProviderKey

    key = ProviderKey.objects.get(provider__slug=slug)
    key.secret = secret
    key.save()


def handoffs(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["role"] == "system" and str(m.get("content", "")).startswith(HANDOFF_MARKER)]


def wait_for_session_row(predicate, timeout: float = 5.0) -> StickySessionRow:
    """The admin mirror is written off the hot path: poll until it shows what the response already said."""
    from tests.polling import wait_until

    def latest() -> StickySessionRow | None:
        return StickySessionRow.objects.order_by("-last_used").first()

    def matching() -> StickySessionRow | None:
        row = latest()
        return row if row is not None and predicate(row) else None

    row = wait_until(matching, timeout=timeout, interval=0.05)
    if not row:
        last = latest()
        raise AssertionError(f"session row never matched; last seen {last and vars(last)}")
    return row


@pytest.fixture
def groq_then_cerebras(emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", "context_window": 32000}])
    add_provider(emulator, "cerebras", ["c"], [{"model_id": "qwen", "context_window": 4096}])
    add_chain("auto", ["groq/llama", "cerebras/qwen"])


def chat(client, messages, **kwargs):
    raw = client.chat.completions.with_raw_response.create(model=kwargs.pop("model", "auto"), messages=messages,
                                                           **kwargs)
    return raw, raw.parse()


def test_same_session_stays_on_its_model_when_the_chain_order_changes(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    raw, _ = chat(client, [SYSTEM, {"role": "user", "content": "Plan a weekend in Lisbon."}],
                  extra_headers={"X-Session-Id": "trip-1"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"

    reorder_chain("auto", ["cerebras/qwen", "groq/llama"])
    # The pinned conversation keeps its model; a new one follows the new chain order.
    raw, _ = chat(client, [SYSTEM, {"role": "user", "content": "And where to eat?"}],
                  extra_headers={"X-Session-Id": "trip-1"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    assert "X-FreeLLM-Switched" not in raw.headers
    raw, _ = chat(client, [SYSTEM, {"role": "user", "content": "Something else entirely."}],
                  extra_headers={"X-Session-Id": "trip-2"})
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"


def test_sessions_live_in_redis_and_survive_a_restart(gateway, emulator, groq_then_cerebras, settings, redis_url):
    import redis

    from routing.sessions import REDIS_KEY_PREFIX, reset_session_store

    settings.REDIS_URL = redis_url
    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "kept"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    stored = list(redis.Redis.from_url(redis_url).scan_iter(REDIS_KEY_PREFIX + "*"))
    assert len(stored) == 1
    # What a restart loses: the process's own memory. The session is still in Redis.
    reset_session_store()
    reorder_chain("auto", ["cerebras/qwen", "groq/llama"])
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "kept"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"


def test_without_session_id_the_conversation_opening_identifies_the_session(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    opening = [SYSTEM, {"role": "user", "content": "Plan a weekend in Porto."}]
    raw, first = chat(client, opening)
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    reorder_chain("auto", ["cerebras/qwen", "groq/llama"])
    follow_up = [*opening, {"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Add a day trip."}]
    raw, _ = chat(client, follow_up)
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    # Same opening words from the OpenAI `user` field of someone else: a session of its own.
    raw, _ = chat(client, [SYSTEM, {"role": "user", "content": "Plan a weekend in Faro."}])
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"


def test_bad_keys_switch_the_session_with_exactly_one_handoff_that_fits(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    messages = [SYSTEM]
    for day in range(12):
        messages.append({"role": "user", "content": f"What should I do on day {day}? " + "Details please. " * 25})
        raw, answer = chat(client, messages, extra_headers={"X-Session-Id": "long-trip"})
        assert raw.headers["X-FreeLLM-Provider"] == "groq"
        messages.append({"role": "assistant", "content": answer.choices[0].message.content})
    assert estimate_tokens(messages) > 4096 - 2000  # the conversation does not fit cerebras as it is

    set_key("groq", "g;401")
    messages.append({"role": "user", "content": "Now make it cheaper. My budget is 300 euros."})
    emulator.reset()
    raw, answer = chat(client, messages, extra_headers={"X-Session-Id": "long-trip"})
    assert answer.choices[0].message.content.startswith("Echo: ")
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"
    assert raw.headers["X-FreeLLM-Switched"] == "groq/llama → cerebras/qwen: key invalid"

    sent = emulator.calls_for(provider="cerebras")[-1].body["messages"]
    assert len(handoffs(sent)) == 1
    assert sent[0] == SYSTEM and handoffs(sent)[0] is sent[1]
    assert "groq/llama" in sent[1]["content"] and "latest user message wins" in sent[1]["content"]
    assert estimate_tokens(sent) <= 4096 - 2000
    assert sent[-1] == messages[-1]  # the latest turn verbatim
    assert len(sent) < len(messages) + 1  # older turns live on in the summary only

    row = wait_for_session_row(lambda r: r.switches == 1)
    assert (row.provider, row.model, row.source) == ("cerebras", "qwen", "header")
    assert row.last_switch_reason == "groq/llama → cerebras/qwen: key invalid"
    from analytics.models import RequestLog
    from tests.fixtures_gateway import wait_until_idle

    wait_until_idle()
    logged = RequestLog.objects.get(switched__startswith="groq/llama")
    assert logged.switched == "groq/llama → cerebras/qwen: key invalid"
    assert logged.session_id == row.key and logged.provider == "cerebras"

    # The session now lives on cerebras: the next turn goes there first, without another handoff.
    set_key("groq", "g")
    messages += [{"role": "assistant", "content": answer.choices[0].message.content},
                 {"role": "user", "content": "Thanks!"}]
    raw, _ = chat(client, messages, extra_headers={"X-Session-Id": "long-trip"})
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"
    assert "X-FreeLLM-Switched" not in raw.headers
    assert handoffs(emulator.calls_for(provider="cerebras")[-1].body["messages"]) == []


def test_rate_limited_sticky_model_switch_names_the_reason(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    chat(client, turn, extra_headers={"X-Session-Id": "s"})
    set_key("groq", "g;429=30")
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "s"})
    assert raw.headers["X-FreeLLM-Switched"] == "groq/llama → cerebras/qwen: rate-limited"


def test_handoff_can_be_turned_off(gateway, emulator, groq_then_cerebras, settings):
    settings.FREELLM_CONTEXT_HANDOFF = False
    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    chat(client, turn, extra_headers={"X-Session-Id": "s"})
    set_key("groq", "g;500")
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "s"})
    assert raw.headers["X-FreeLLM-Switched"].startswith("groq/llama → cerebras/qwen")
    assert emulator.calls_for(provider="cerebras")[-1].body["messages"] == turn


def test_explicit_model_bypasses_the_session(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    chat(client, turn, extra_headers={"X-Session-Id": "s"})  # pinned to groq
    raw, _ = chat(client, turn, model="cerebras/qwen", extra_headers={"X-Session-Id": "s"})
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"
    assert "X-FreeLLM-Switched" not in raw.headers
    assert handoffs(emulator.calls_for(provider="cerebras")[-1].body["messages"]) == []
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "s"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"


def test_sticky_model_removed_from_the_chain_is_dropped(gateway, emulator, groq_then_cerebras):
    from providers.models import ChainEntry

    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    chat(client, turn, extra_headers={"X-Session-Id": "s"})
    ChainEntry.objects.get(chain__name="auto", model__provider__slug="groq").delete()
    raw, _ = chat(client, turn, extra_headers={"X-Session-Id": "s"})
    assert raw.headers["X-FreeLLM-Provider"] == "cerebras"
    # Not a switch: the session starts afresh on the chain, with no handoff.
    assert "X-FreeLLM-Switched" not in raw.headers
    assert handoffs(emulator.calls_for(provider="cerebras")[-1].body["messages"]) == []
    row = wait_for_session_row(lambda r: r.provider == "cerebras")
    assert row.switches == 0


def test_streamed_turn_switches_too(gateway, emulator, groq_then_cerebras):
    client = gateway.openai()
    turn = [SYSTEM, {"role": "user", "content": "Hi"}]
    chat(client, turn, extra_headers={"X-Session-Id": "s"})
    set_key("groq", "g;503")
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=turn, stream=True, extra_headers={"X-Session-Id": "s"}
    ) as response:
        assert response.headers["X-FreeLLM-Switched"] == "groq/llama → cerebras/qwen: failing"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "Echo: Hi"
    assert len(handoffs(emulator.calls_for(provider="cerebras")[-1].body["messages"])) == 1


# --- gating ----------------------------------------------------------------------------------------

IMAGE_TURN = [{
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ],
}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture
def mixed_capabilities(emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", "context_window": 8000}])
    add_provider(emulator, "gemini", ["m"], [{"model_id": "flash", "context_window": 1_000_000,
                                              "supports_vision": True}])
    add_provider(emulator, "mistral", ["t"], [{"model_id": "small", "context_window": 32000,
                                               "supports_tools": True}])
    add_chain("auto", ["groq/llama", "gemini/flash", "mistral/small"])
    add_chain("text-only", ["groq/llama"])


def test_images_go_only_to_vision_models(gateway, emulator, mixed_capabilities):
    raw, _ = chat(gateway.openai(), IMAGE_TURN)
    assert raw.headers["X-FreeLLM-Provider"] == "gemini"
    assert "groq/llama/* -> skipped:no vision" in raw.headers["X-FreeLLM-Trail"]
    assert emulator.calls_for(provider="groq") == []


def test_tools_go_only_to_tool_capable_models(gateway, emulator, mixed_capabilities):
    raw, _ = chat(gateway.openai(), [{"role": "user", "content": "Weather in Lisbon?"}], tools=TOOLS)
    assert raw.headers["X-FreeLLM-Provider"] == "mistral"
    assert [c.provider for c in emulator.calls] == ["mistral"]


def test_oversize_prompt_moves_up_to_a_larger_window(gateway, emulator, mixed_capabilities):
    raw, _ = chat(gateway.openai(), [{"role": "user", "content": "word " * 12000}])
    assert raw.headers["X-FreeLLM-Provider"] == "gemini"
    assert emulator.calls_for(provider="groq") == []


@pytest.mark.parametrize(
    ("messages", "extra", "needs"),
    [
        (IMAGE_TURN, {}, "images"),
        ([{"role": "user", "content": "Weather?"}], {"tools": TOOLS}, "tools"),
        ([{"role": "user", "content": "JSON please"}], {"response_format": {"type": "json_object"}}, "JSON"),
    ],
)
def test_no_capable_model_is_a_422_before_any_upstream_call(gateway, emulator, mixed_capabilities, messages,
                                                            extra, needs):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        gateway.openai().chat.completions.create(model="text-only", messages=messages, **extra)
    error = caught.value.body
    assert error["code"] == "no_capable_model"
    assert needs in error["message"] and "groq/llama" in error["message"]
    assert emulator.calls == []


def test_turn_the_sticky_model_cannot_serve_switches_with_the_capability_as_reason(gateway, emulator,
                                                                                   mixed_capabilities):
    client = gateway.openai()
    raw, _ = chat(client, [{"role": "user", "content": "Hi"}], extra_headers={"X-Session-Id": "pics"})
    assert raw.headers["X-FreeLLM-Provider"] == "groq"
    raw, _ = chat(client, IMAGE_TURN, extra_headers={"X-Session-Id": "pics"})
    assert raw.headers["X-FreeLLM-Switched"] == "groq/llama → gemini/flash: no vision"
    assert len(handoffs(emulator.calls_for(provider="gemini")[-1].body["messages"])) == 1
    assert len(emulator.calls_for(provider="groq")) == 1
