"""A plain (non-stream) chat request is served from an upstream stream, assembled into one chat.completion.

So liveness is judged by the first token and the gaps between chunks, not by how long the whole answer takes:
a slow but steady answer is not cut by FREELLM_FIRST_TOKEN_TIMEOUT, a hung upstream still fails over after
it, and an answer that breaks halfway fails over too (the client has seen nothing yet), its tokens counted.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from providers.adapters.base import Target, Timeouts
from tests.fixtures_gateway import KINDS, WEATHER_TOOL, add_chain, add_provider, capable_route
from tests.polling import wait_until

STORY = "one two three four five six seven eight nine ten"


@pytest.fixture
def quota_store():
    """An in-process quota store the test can read (the gateway runs in this process)."""
    from routing.quota import set_quota_store
    from routing.quota.local import LocalQuotaStore

    store = LocalQuotaStore()
    set_quota_store(store)
    yield store
    set_quota_store(None)


def with_backup(emulator, key: str) -> None:
    add_provider(emulator, "groq", [key], ["llama"])
    add_provider(emulator, "backup", ["ok"], ["other"])
    add_chain("auto", ["groq/llama", "backup/other"])


def test_a_slow_but_steady_answer_is_not_cut_by_the_first_token_timeout(gateway, emulator, settings):
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 0.5
    settings.FREELLM_IDLE_TIMEOUT = 1.0
    with_backup(emulator, "a;gap=0.2")

    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": STORY}]
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == f"Echo: {STORY}"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert raw.headers["X-FreeLLM-Trail"] == "groq/llama/groq-0 -> ok"
    [call] = emulator.calls_for(provider="groq")
    # The upstream was asked for a stream, and it took longer than the first-token timeout to finish.
    assert call.stream and call.body["stream"] is True and call.completed
    assert call.ended - call.time > settings.FREELLM_FIRST_TOKEN_TIMEOUT
    assert emulator.calls_for(provider="backup") == []


def test_a_hung_upstream_fails_over_after_the_first_token_timeout(gateway, emulator, settings):
    settings.FREELLM_CONNECT_TIMEOUT = 1.0
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 0.5
    with_backup(emulator, "a;hang")

    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )

    assert raw.parse().choices[0].message.content == "Echo: hi"
    assert raw.headers["X-FreeLLM-Trail"] == "groq/llama/groq-0 -> timeout, backup/other/backup-0 -> ok"
    # The emulator notices a client that hung up at its next poll.
    assert wait_until(lambda: emulator.calls_for(provider="groq")[0].disconnected, interval=0.05)


@pytest.mark.parametrize(("directive", "outcome"), [("drop=3", "connection"), ("midfail=3", "server_error")])
def test_an_answer_broken_halfway_fails_over_and_the_client_gets_one_whole_answer(
    gateway, emulator, quota_store, directive, outcome
):
    from routing.quota.base import Route

    with_backup(emulator, f"a;{directive}")

    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": STORY}]
    )

    assert raw.parse().choices[0].message.content == f"Echo: {STORY}"
    assert raw.headers["X-FreeLLM-Provider"] == "backup"
    assert raw.headers["X-FreeLLM-Trail"] == f"groq/llama/groq-0 -> {outcome}, backup/other/backup-0 -> ok"
    [broken] = emulator.calls_for(provider="groq")
    assert broken.chunks_sent >= 3 and not broken.completed
    # The broken call reached the provider and generated tokens: it stays counted, it is not given back.
    used = quota_store.status_now(Route("groq", "llama", "groq-0")).used
    assert used["rpm"] == 1 and used["tpm"] > 0


def test_a_reasoning_model_answers_with_its_reasoning_beside_the_content(gateway, emulator, settings):
    # gpt-oss streams `delta.reasoning` first; the plain answer carries it as `message.reasoning`, as the
    # provider's own non-stream answer would.
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 0.5
    with_backup(emulator, "a;think=4;gap=0.2")

    message = gateway.openai().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "think first"}]
    ).choices[0].message

    assert message.content == "Echo: think first"
    assert message.model_extra["reasoning"] == "".join(f"thought {n}. " for n in range(4))
    assert emulator.calls_for(provider="backup") == []


def test_the_time_budget_bounds_an_answer_that_is_still_coming(gateway, emulator, settings):
    settings.FREELLM_TIME_BUDGET = 1.0
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 0.5
    with_backup(emulator, "a;gap=0.2")

    with pytest.raises(openai.APIStatusError) as err:
        gateway.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": STORY * 2}])

    assert err.value.status_code == 504 and err.value.body["code"] == "upstream_timeout"
    assert err.value.response.headers["X-FreeLLM-Trail"] == "groq/llama/groq-0 -> timeout"
    # The gateway hung up on the unfinished answer, and no budget was left to try the backup.
    [call] = emulator.calls_for(provider="groq")
    assert not call.completed
    assert emulator.calls_for(provider="backup") == []


def test_an_upstream_stream_without_usage_gets_the_gateways_estimate(gateway, emulator):
    from routing.tokens import estimate_tokens

    # Mistral refuses stream_options, so its stream is not asked for a usage chunk.
    add_provider(emulator, "mistral", ["ok"], ["small"], drop_params=["stream_options"])
    add_chain("auto", ["mistral/small"])
    messages = [{"role": "user", "content": "hello there"}]

    completion = gateway.openai().chat.completions.create(model="auto", messages=messages)

    assert "stream_options" not in emulator.calls[0].body
    assert completion.usage.prompt_tokens == estimate_tokens(messages)
    assert completion.usage.completion_tokens == len("Echo: hello there") // 4


def _direct_answer(route: str, request: dict) -> dict:
    """What the provider's own non-stream endpoint answers (adapter.chat against the emulator, no gateway)."""
    from providers.adapters import get_adapter
    from providers.models import ProviderKey, UpstreamModel

    slug, model_id = route.split("/", 1)
    model = UpstreamModel.objects.select_related("provider").get(provider__slug=slug, model_id=model_id)
    target = Target(slug, model.provider.base_url, model_id, ProviderKey.objects.get(provider=model.provider).secret)

    async def call():
        async with httpx.AsyncClient() as client:
            return await get_adapter(model.provider.adapter).chat(client, target, request, Timeouts())

    return asyncio.run(call()).body


def _comparable(body: dict) -> dict:
    """The parts of an answer that must not depend on how it was fetched (ids are made up per call)."""
    choice = body["choices"][0]
    message = dict(choice["message"])
    calls = message.pop("tool_calls", None) or []
    assert all(call["id"] for call in calls)
    return {
        "message": message,
        "tool_calls": [{k: v for k, v in call.items() if k != "id"} for call in calls],
        "finish_reason": choice["finish_reason"],
        "usage": {k: body["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_call"])
def test_the_assembled_answer_is_the_providers_own_non_stream_answer(gateway, emulator, kind, tools):
    route = capable_route(emulator, kind)
    add_chain("auto", [route])
    question = "call tool for Oslo" if tools else "hello there"
    request = {"messages": [{"role": "user", "content": question}], **({"tools": [WEATHER_TOOL]} if tools else {})}

    raw = gateway.openai().chat.completions.with_raw_response.create(model="auto", **request)
    completion = raw.parse()
    assembled = raw.http_response.json()

    assert emulator.calls[0].stream
    assert _comparable(assembled) == _comparable(_direct_answer(route, request))
    assert completion.choices[0].finish_reason == ("tool_calls" if tools else "stop")
    if tools:
        assert completion.choices[0].message.tool_calls[0].function.arguments == '{"city": "echo"}'
    else:
        assert completion.choices[0].message.content == "Echo: hello there"
