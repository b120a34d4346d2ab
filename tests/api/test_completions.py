"""POST /v1/completions with the openai SDK: chat models get a continuation (or fill-in-the-middle) prompt,
models with a FIM endpoint get prompt and suffix natively; plain and streamed text_completion answers,
failover between the two kinds, and clear 400s for what legacy completions cannot do here."""

from __future__ import annotations

import openai
import pytest

from providers.models import ModelAlias
from routing.api.completions import CONTINUE_INSTRUCTION, FILL_INSTRUCTION
from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))"


@pytest.fixture
def models(emulator):
    add_provider(emulator, "groq", ["g"], ["llama"])
    add_provider(emulator, "mistral", ["m"], [{"model_id": "codestral", "supports_fim": True}])
    add_chain("auto", ["groq/llama"])
    add_chain("code", ["mistral/codestral", "groq/llama"])


def collect(stream) -> tuple[str, list]:
    chunks = list(stream)
    return "".join(c.choices[0].text for c in chunks if c.choices), chunks


def test_a_chat_model_continues_the_prompt(gateway, emulator, models):
    raw = gateway.openai().completions.with_raw_response.create(model="auto", prompt=PREFIX, max_tokens=32,
                                                                 stop=["\n\n"], temperature=0.2)
    reply = raw.parse()

    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == f"Echo: {PREFIX}"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert raw.headers["X-FreeLLM-Provider"] == "groq" and raw.headers["X-FreeLLM-Chain"] == "auto"
    [call] = emulator.calls
    assert call.path.endswith("/chat/completions")
    assert call.body["messages"] == [{"role": "system", "content": CONTINUE_INSTRUCTION},
                                     {"role": "user", "content": PREFIX}]
    assert (call.body["max_tokens"], call.body["stop"], call.body["temperature"]) == (32, ["\n\n"], 0.2)
    assert not {"prompt", "suffix", "echo"} & set(call.body)


def test_a_suffix_becomes_a_fill_in_the_middle_chat_prompt(gateway, emulator, models):
    reply = gateway.openai().completions.create(model="groq/llama", prompt=[PREFIX], suffix=SUFFIX)

    [call] = emulator.calls
    assert call.body["messages"][0] == {"role": "system", "content": FILL_INSTRUCTION}
    assert call.body["messages"][1]["content"] == f"<PREFIX>{PREFIX}</PREFIX><SUFFIX>{SUFFIX}</SUFFIX>"
    assert reply.choices[0].text.startswith("Echo: <PREFIX>")


@pytest.mark.parametrize("suffix", [SUFFIX, None])
def test_a_fim_model_gets_prompt_and_suffix_natively(gateway, emulator, models, suffix):
    extra = {"suffix": suffix} if suffix else {}
    reply = gateway.openai().completions.create(model="mistral/codestral", prompt=PREFIX, max_tokens=16,
                                                stop="\n\n", **extra)

    expected = f"MIDDLE({PREFIX[-8:]}|{SUFFIX[:8]})" if suffix else f"CONTINUED({PREFIX[-8:]})"
    assert reply.choices[0].text == expected
    [call] = emulator.calls
    assert call.path.endswith("/fim/completions")
    assert call.body["prompt"] == PREFIX and call.body.get("suffix") == suffix
    assert (call.body["max_tokens"], call.body["stop"]) == (16, "\n\n")
    assert "messages" not in call.body


@pytest.mark.parametrize("model", ["auto", "mistral/codestral"])
def test_streamed_text_completion_chunks(gateway, emulator, models, model):
    text, chunks = collect(gateway.openai().completions.create(
        model=model, prompt=PREFIX, suffix=SUFFIX, stream=True, stream_options={"include_usage": True}))

    assert text in (f"MIDDLE({PREFIX[-8:]}|{SUFFIX[:8]})", f"Echo: <PREFIX>{PREFIX}</PREFIX><SUFFIX>{SUFFIX}</SUFFIX>")
    assert len(chunks) > 2 and all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_the_stream_ends_with_done(gateway, emulator, models):
    import httpx

    with httpx.stream("POST", f"{gateway.base_url}/completions", headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "auto", "prompt": "hi", "stream": True}) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"object":"text_completion"' in events[0]


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limited_fim_model_fails_over_to_a_chat_model(gateway, emulator, stream):
    add_provider(emulator, "mistral", ["m;429"], [{"model_id": "codestral", "supports_fim": True}])
    add_provider(emulator, "groq", ["g"], ["llama"])
    add_chain("code", ["mistral/codestral", "groq/llama"])
    client = gateway.openai()

    if stream:
        text, _ = collect(client.completions.create(model="code", prompt=PREFIX, suffix=SUFFIX, stream=True))
    else:
        text = client.completions.create(model="code", prompt=PREFIX, suffix=SUFFIX).choices[0].text

    assert text.startswith("Echo: <PREFIX>")
    assert [c.path.rsplit("/", 2)[-2:] for c in emulator.calls] == [["fim", "completions"], ["chat", "completions"]]


def test_aliases_and_the_request_log_dialect(gateway, emulator, models):
    from analytics.models import RequestLog

    ModelAlias.objects.create(pattern="gpt-3.5-turbo-instruct*", target="code", position=1)
    reply = gateway.openai().completions.create(model="gpt-3.5-turbo-instruct", prompt=PREFIX)

    assert reply.choices[0].text.startswith("CONTINUED(")
    wait_until_idle()
    row = RequestLog.objects.get()
    assert (row.dialect, row.endpoint, row.requested_model, row.provider) == (
        "completions", "chat", "gpt-3.5-turbo-instruct", "mistral")


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"echo": True}, "echo", "echo=true is not supported"),
    ({"prompt": ["one", "two"]}, "prompt", "list of one string"),
    ({"prompt": [[1, 2, 3]]}, "prompt", "token arrays are not supported"),
    ({"prompt": [1, 2, 3]}, "prompt", "token arrays are not supported"),
    ({"n": 2}, "n", "only 1 is supported"),
    ({"best_of": 3}, "best_of", "only 1 is supported"),
    ({"logprobs": 2}, "logprobs", "logprobs are not supported"),
    ({"prompt": ""}, "prompt", "must not be empty"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
])
def test_what_legacy_completions_cannot_do_here_is_a_clear_400(gateway, emulator, models, extra, param, says):
    body = {"model": "auto", "prompt": PREFIX, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().completions.create(**body)

    error = caught.value.body
    assert error["param"] == param and says in error["message"]
    assert emulator.calls == []


def test_completions_open_no_session_per_prompt_but_keep_a_named_one(gateway, emulator, models):
    from analytics.models import StickySession

    client = gateway.openai()
    for prompt in ("a", "ab", "abc"):
        client.completions.create(model="auto", prompt=prompt)
    wait_until_idle()
    assert not StickySession.objects.exists()

    for prompt in ("a", "ab"):
        client.completions.create(model="auto", prompt=prompt, extra_headers={"X-Session-Id": "editor-1"})
    wait_until_idle()
    assert StickySession.objects.count() == 1
