"""Malformed client input is a 400 in OpenAI's shape naming the parameter, never forwarded upstream (so
never a 500, never an upstream 5xx against the route); and one client's 5xx cannot open a route's
circuit for everyone."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama", {"model_id": "embed", "kind": "embedding", "family": "e"}])
    add_chain("auto", ["groq/llama"])
    return gateway


def _post(gw, path: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{gw.base_url}{path}", content=content,
                      headers={"Authorization": f"Bearer {gw.api_key}", "Content-Type": "application/json"})


def _chat(messages: str, extra: str = "") -> bytes:
    return ('{"model": "auto", "messages": ' + messages + extra + '}').encode()


@pytest.mark.parametrize(("content", "param"), [
    (_chat('[{"role": "user", "content": "\\ud800"}]'), "messages.0.content"),
    (_chat('[{"role": "user", "content": [{"type": "text", "text": "x\\udfff"}]}]'), "messages.0.content.0.text"),
    (_chat('[{"role": "user", "content": "hi"}]', ', "top_p": Infinity'), "top_p"),
    (_chat('[{"role": "user", "content": "hi"}]', ', "temperature": NaN'), "temperature"),
    (_chat('[{"role": "user", "content": "hi"}]', ', "presence_penalty": 1e999'), "presence_penalty"),
    (_chat('[{"role": "user", "content": "hi"}, {"role": "assistant", "content": null, "tool_calls": [1]}]'),
     "messages.1.tool_calls.0"),
    (_chat('[{"role": "user", "content": "hi"}, {"role": "assistant", "content": null, "tool_calls": "x"}]'),
     "messages.1.tool_calls"),
    (_chat('[{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"type": "function"}]}]'),
     "messages.1.tool_calls.0.function"),
    (_chat('[{"role": "user", "content": [{"type": "text", "text": 5}]}]'), "messages.0.content.0.text"),
    (_chat('[{"role": "user", "content": [{"type": "image_url", "image_url": 7}]}]'), "messages.0.content.0.image_url"),
    (_chat('[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]'),
     "messages.0.content.0.image_url"),
    (_chat('[{"role": "user", "content": [5]}]'), "messages.0.content.0"),
    (_chat('[{"role": "user", "content": 5}]'), "messages.0.content"),
    (_chat('[{"role": "wizard", "content": "hi"}]'), "messages.0.role"),
    (_chat('[{"role": 3, "content": "hi"}]'), "messages.0.role"),
    (b'{"model": "embed", "input": "\\ud800"}', "input"),
])
def test_malformed_input_is_a_400_naming_the_param_and_never_forwarded(configured, emulator, content, param):
    path = "/embeddings" if b'"input"' in content else "/chat/completions"

    resp = _post(configured, path, content)

    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert emulator.calls == []


def test_well_formed_parts_and_tool_calls_still_pass(configured):
    messages = ('[{"role": "system", "content": "be brief"},'
                ' {"role": "user", "content": [{"type": "text", "text": "hi"}]},'
                ' {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",'
                '  "function": {"name": "f", "arguments": "{}"}}]},'
                ' {"role": "tool", "tool_call_id": "c1", "content": "42"},'
                ' {"role": "user", "content": "and?"}]')
    assert _post(configured, "/chat/completions", _chat(messages)).status_code == 200


def test_one_clients_5xx_cannot_open_a_route_for_everyone(gateway, emulator, django_user_model):
    from routing.services import api_key_create

    add_provider(emulator, "flaky", ["f;500"], ["llama"])
    add_provider(emulator, "backup", ["ok"], ["llama"])
    add_chain("auto", ["flaky/llama", "backup/llama"])
    _, other_key = api_key_create(user=django_user_model.objects.create_user("bea", password="x"), name="b")
    asked = iter(range(100))

    def ask(key: str) -> str:
        # A new conversation each time: no sticky session steers it away from the first route.
        resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "auto", "messages": [{"role": "user", "content": f"question {next(asked)}"}]})
        assert resp.status_code == 200 and resp.headers["X-FreeLLM-Provider"] == "backup"
        return resp.headers["X-FreeLLM-Trail"]

    failed_on_flaky = "flaky/llama/flaky-0 -> server_error"
    # One client, three times (the breaker opens after two failures in a row): flaky is tried each time.
    assert all(ask(gateway.api_key).startswith(failed_on_flaky) for _ in range(3))
    # Its failures counted once: another client's request still tries flaky first.
    assert ask(other_key).startswith(failed_on_flaky)
    # Two clients failing on it is the route failing: now it cools down and nobody waits for it.
    assert failed_on_flaky not in ask(gateway.api_key)
