"""The native AI Horde adapter against the emulator's Horde wire (submit a job, poll it, cancel it), over
real HTTP: the prompt transcript, the parameter mapping, anonymous use, errors, streaming and the model list."""

from __future__ import annotations

import httpx
import pytest

from providers.adapters.aihorde import ANONYMOUS_KEY, AIHordeAdapter, build_generate_request
from providers.adapters.base import ErrorKind, Target, Timeouts, UpstreamError
from tests.adapter_helpers import TIMEOUTS, chat, collect, finishes

# Polls every 10 ms: the emulator's job is done on its second status poll.
ADAPTER = AIHordeAdapter(poll_interval=0.01)
AGENT = {"Client-Agent": "freellm:1:test"}


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as client:
        yield client


def target(emulator, key: str | None = "horde-key", model: str = "any", headers=AGENT) -> Target:
    return Target(provider="aihorde", base_url=emulator.base_url("aihorde", "api/v2"), model=model, api_key=key,
                  headers=dict(headers))


async def test_chat_submits_a_job_polls_it_and_answers(emulator, client):
    request = {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        "max_tokens": 4,  # below the Horde's minimum of 16
        "temperature": 0.3,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    result = await ADAPTER.chat(client, target(emulator), request, TIMEOUTS)

    assert result.body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hello"}
    assert result.body["choices"][0]["finish_reason"] == "stop"
    assert result.usage is None  # the Horde reports no token counts
    submit, *polls = emulator.calls_for(provider="aihorde")
    assert submit.path == "/aihorde/api/v2/generate/text/async"
    assert submit.headers["apikey"] == "horde-key" and submit.headers["client-agent"] == "freellm:1:test"
    assert submit.body == {
        "prompt": "System: Be terse.\nUser: hello\nAssistant:",
        "params": {"max_length": 16, "max_context_length": 2048, "stop_sequence": ["END", "\nUser:"],
                   "temperature": 0.3},
        "models": [],  # "any": every worker may take it; tools have no Horde equivalent and are not sent
    }
    assert [p.path.rsplit("/", 1)[0] for p in polls] == ["/aihorde/api/v2/generate/text/status"] * 2


async def test_without_a_key_the_anonymous_key_is_sent_and_a_named_model_is_asked_for(emulator, client):
    result = await ADAPTER.chat(client, target(emulator, key=None, model="koboldcpp/Tiefighter-13B"), chat("hi"),
                                TIMEOUTS)
    assert result.body["model"] == "koboldcpp/Tiefighter-13B"
    submit = emulator.calls_for(provider="aihorde", path="/generate/text/async")[0]
    assert submit.headers["apikey"] == ANONYMOUS_KEY and submit.body["models"] == ["koboldcpp/Tiefighter-13B"]


def test_max_tokens_is_clamped_to_the_horde_range():
    assert build_generate_request(chat("x", max_tokens=10_000), "any")["params"]["max_length"] == 512
    assert build_generate_request(chat("x", max_completion_tokens=100), "m")["params"]["max_length"] == 100


async def test_a_stream_request_gets_the_finished_job_as_one_chunk(emulator, client):
    stream = await ADAPTER.chat_stream(client, target(emulator), chat("stream me"), TIMEOUTS)
    chunks = await collect(stream)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: stream me"
    assert finishes(chunks) == ["stop"]


@pytest.mark.parametrize(
    ("key", "model", "kind"),
    [
        ("bad;401", "any", ErrorKind.AUTH),
        ("busy;429", "any", ErrorKind.RATE_LIMITED),
        ("horde-key", "impossible/model", ErrorKind.NOT_FOUND),
        ("horde-key", "faulty/model", ErrorKind.SERVER),
    ],
)
async def test_failures_map_to_error_kinds(emulator, client, key, model, kind):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, key=key, model=model), chat("x"), TIMEOUTS)
    assert caught.value.kind == kind
    assert key not in caught.value.message


async def test_the_missing_client_agent_header_is_a_bad_request(emulator, client):
    with pytest.raises(UpstreamError) as caught:
        await ADAPTER.chat(client, target(emulator, headers={}), chat("x"), TIMEOUTS)
    assert caught.value.kind == ErrorKind.BAD_REQUEST and "Client-Agent" in caught.value.message


async def test_a_job_still_queued_at_the_deadline_is_cancelled(emulator, client):
    slow = AIHordeAdapter(poll_interval=0.3)
    with pytest.raises(UpstreamError) as caught:
        await slow.chat(client, target(emulator), chat("x"), Timeouts(connect=2, first_token=0.2, idle=2))
    assert caught.value.kind == ErrorKind.TIMEOUT
    [cancel] = [c for c in emulator.calls_for(provider="aihorde") if c.method == "DELETE"]
    assert cancel.path.startswith("/aihorde/api/v2/generate/text/status/")


async def test_list_models_reads_the_workers_text_models(emulator, client):
    emulator.engine.models["aihorde"] = ["koboldcpp/A-7B", {"name": "aphrodite/B-70B", "count": 3}]
    models = await ADAPTER.list_models(client, target(emulator), TIMEOUTS)
    assert [(m.id, m.kind, m.name) for m in models] == [
        ("koboldcpp/A-7B", "chat", "1 worker(s)"), ("aphrodite/B-70B", "chat", "3 worker(s)")
    ]
    [call] = emulator.calls_for(provider="aihorde")
    assert call.path == "/aihorde/api/v2/status/models"
