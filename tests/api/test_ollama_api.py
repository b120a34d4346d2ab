"""Ollama's front door (/api/*) through the live gateway, with the official `ollama` Python client.

Editors that only speak Ollama (Zed, JetBrains AI, Open WebUI's Ollama mode) see freellm's chains and models
as local models; the emulator plays the upstreams, so failover and stickiness are the real ones.
"""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from tests.emulator.content import TINY_PNG_B64
from tests.fixtures_gateway import add_chain, add_provider, reorder_chain, wait_until_idle

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def client(gateway, key: str | None = "default") -> ollama.Client:
    headers = {} if key is None else {"Authorization": f"Bearer {gateway.api_key if key == 'default' else key}"}
    return ollama.Client(host=gateway.url, headers=headers, timeout=30)


@pytest.fixture
def groq(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], [{"model_id": "llama", "supports_tools": True, "supports_json": True,
                                             "supports_vision": True, "context_window": 32000}])
    add_provider(emulator, "mistral", ["ok"], [{"model_id": "mistral-embed", "kind": "embedding", "family": "me"}])
    add_chain("auto", ["groq/llama"])


def test_list_show_and_version(gateway, groq):
    c = client(gateway)
    names = {m.model for m in c.list().models}
    assert names == {"auto:latest", "groq/llama:latest", "mistral/mistral-embed:latest"}

    shown = c.show("auto")
    assert {"completion", "tools", "vision"} <= set(shown.capabilities)
    assert shown.modelinfo["freellm.context_length"] == 32000
    assert c.show("mistral/mistral-embed:latest").capabilities == ["embedding"]
    assert httpx.get(f"{gateway.url}/api/version").json()["version"]


def test_chat_plain_carries_counts_and_durations(gateway, emulator, groq):
    response = client(gateway).chat(model="auto:latest", stream=False, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello ollama"}],
        options={"temperature": 0.2, "top_p": 0.7, "num_predict": 30, "stop": ["END"], "seed": 4, "num_ctx": 4096})

    assert response.message.content == "Echo: hello ollama"
    assert response.done and response.done_reason == "stop"
    assert response.prompt_eval_count > 0 and response.eval_count > 0
    assert response.total_duration >= response.prompt_eval_duration + response.eval_duration
    assert response.eval_duration > 0
    sent = emulator.calls[-1].body
    assert {k: sent[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.2, "top_p": 0.7, "max_tokens": 30, "stop": ["END"], "seed": 4}
    assert "num_ctx" not in sent


def test_chat_streams_by_default_as_ndjson(gateway, groq):
    raw = httpx.post(f"{gateway.url}/api/chat", headers={"Authorization": f"Bearer {gateway.api_key}"},
                     json={"model": "auto", "messages": [{"role": "user", "content": "stream me please"}]})
    assert raw.headers["content-type"].startswith("application/x-ndjson")
    assert raw.headers["x-freellm-provider"] == "groq"

    parts = list(client(gateway).chat(model="auto", stream=True,
                                      messages=[{"role": "user", "content": "stream me please"}]))
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == "Echo: stream me please" and len(parts) >= 4
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count > 0 and parts[-1].prompt_eval_count > 0


def test_a_stream_that_breaks_after_the_first_byte_ends_with_an_error_line(gateway, emulator):
    add_provider(emulator, "groq", ["a;drop=2"], ["llama"])
    add_chain("auto", ["groq/llama"])
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in client(gateway).chat(model="auto", stream=True,
                                         messages=[{"role": "user", "content": "tell me a long story"}]):
            received.append(part)
    assert received and not any(p.done for p in received)
    assert "upstream stream failed" in caught.value.error


def test_generate_plain_and_streamed(gateway, emulator, groq):
    c = client(gateway)
    answer = c.generate(model="auto", prompt="say hi", system="Be brief.", stream=False)
    assert answer.response == "Echo: say hi" and answer.done_reason == "stop"
    assert emulator.calls[-1].body["messages"][0] == {"role": "system", "content": "Be brief."}

    parts = list(c.generate(model="groq/llama", prompt="count along", stream=True))
    assert "".join(p.response for p in parts) == "Echo: count along" and parts[-1].done


def test_an_image_reaches_the_upstream(gateway, emulator, groq):
    client(gateway).chat(model="auto", stream=False, messages=[
        {"role": "user", "content": "what is it?", "images": [TINY_PNG_B64]}])
    [text, image] = emulator.calls[-1].body["messages"][0]["content"]
    assert image["image_url"]["url"] == f"data:image/png;base64,{TINY_PNG_B64}"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(gateway, emulator, groq, stream):
    c = client(gateway)
    question = {"role": "user", "content": "call tool for Oslo"}
    if stream:
        parts = list(c.chat(model="auto", messages=[question], tools=[WEATHER], stream=True))
        calls = [call for p in parts for call in (p.message.tool_calls or [])]
    else:
        calls = c.chat(model="auto", messages=[question], tools=[WEATHER], stream=False).message.tool_calls
    [call] = calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "echo"}

    final = c.chat(model="auto", tools=[WEATHER], stream=False, messages=[
        question, {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"}])
    assert final.message.content == "Tool said: sunny"
    sent = emulator.calls[-1].body["messages"]
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]


def test_format_json_and_schema(gateway, emulator, groq):
    c = client(gateway)
    plain = c.chat(model="auto", stream=False, format="json", messages=[{"role": "user", "content": "as json"}])
    assert json.loads(plain.message.content) == {"echo": "as json"}
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    c.generate(model="auto", prompt="as json", format=schema, stream=False)
    assert emulator.calls[-1].body["response_format"]["json_schema"]["schema"] == schema


def test_embed_and_the_older_embeddings(gateway, emulator, groq):
    c = client(gateway)
    result = c.embed(model="mistral-embed", input=["one", "two"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 8
    assert result.prompt_eval_count > 0
    legacy = c.embeddings(model="mistral/mistral-embed:latest", prompt="one")
    assert list(legacy.embedding) == list(result.embeddings[0])


def test_an_empty_chat_loads_the_model_without_calling_upstream(gateway, emulator, groq):
    loaded = client(gateway).chat(model="auto", messages=[], stream=False)
    assert loaded.done_reason == "load"
    assert emulator.calls == []


def test_a_429_upstream_fails_over_and_a_conversation_stays_on_its_model(gateway, emulator):
    add_provider(emulator, "busy", ["b;429=30"], ["llama"])
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_provider(emulator, "cerebras", ["ok"], ["qwen"])
    add_chain("auto", ["busy/llama", "groq/llama", "cerebras/qwen"])
    opening = {"role": "user", "content": "Plan a weekend in Lisbon."}
    url, headers = f"{gateway.url}/api/chat", {"Authorization": f"Bearer {gateway.api_key}"}

    first = httpx.post(url, headers=headers, json={"model": "auto", "stream": False, "messages": [opening]})
    assert first.headers["x-freellm-provider"] == "groq"
    assert first.headers["x-freellm-trail"].startswith("busy/llama/busy-0 -> rate_limited")

    reorder_chain("auto", ["cerebras/qwen", "busy/llama", "groq/llama"])
    again = httpx.post(url, headers=headers, json={"model": "auto", "stream": False, "messages": [
        opening, first.json()["message"], {"role": "user", "content": "And where to eat?"}]})
    assert again.headers["x-freellm-provider"] == "groq"
    other = httpx.post(url, headers=headers, json={"model": "auto", "stream": False,
                                                   "messages": [{"role": "user", "content": "Something else."}]})
    assert other.headers["x-freellm-provider"] == "cerebras"


def test_no_key_is_a_401_in_ollama_shape(gateway, groq):
    with pytest.raises(ollama.ResponseError) as caught:
        client(gateway, key=None).chat(model="auto", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert caught.value.status_code == 401 and "key" in caught.value.error.lower()
    with pytest.raises(ollama.ResponseError) as caught:
        client(gateway, key="fl-wrong").list()
    assert caught.value.status_code == 401


def test_the_keyless_user_is_served_from_loopback_and_logged_as_that_user(gateway, groq, settings):
    from analytics.models import RequestLog

    settings.FREELLM_OLLAMA_KEYLESS_USER = "alice"
    answer = client(gateway, key=None).chat(model="auto", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert answer.message.content == "Echo: hi"
    wait_until_idle()
    row = RequestLog.objects.get()
    assert row.user.username == "alice" and row.api_key is not None and row.dialect == "ollama"

    # Whatever came through a proxy is not "this machine", even when the proxy runs on it.
    proxied = httpx.post(f"{gateway.url}/api/chat", headers={"X-Forwarded-For": "203.0.113.9"},
                         json={"model": "auto", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    assert proxied.status_code == 401 and "error" in proxied.json()
    # A key that is sent is checked, keyless user or not.
    with pytest.raises(ollama.ResponseError) as caught:
        client(gateway, key="fl-wrong").list()
    assert caught.value.status_code == 401


def test_a_keyless_user_without_a_key_is_still_logged_as_themselves(gateway, groq, settings, django_user_model):
    from analytics.models import RequestLog

    django_user_model.objects.create_user("bob", password="x")
    settings.FREELLM_OLLAMA_KEYLESS_USER = "bob"
    assert client(gateway, key=None).generate(model="auto", prompt="hi", stream=False).response == "Echo: hi"
    wait_until_idle()
    row = RequestLog.objects.get()
    assert row.user.username == "bob" and row.api_key is None

    settings.FREELLM_OLLAMA_KEYLESS_USER = "nobody"
    with pytest.raises(ollama.ResponseError) as caught:
        client(gateway, key=None).list()
    assert caught.value.status_code == 401


def test_errors_come_in_ollama_shape(gateway, groq):
    c = client(gateway)
    with pytest.raises(ollama.ResponseError) as caught:
        c.chat(model="nope", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert caught.value.status_code == 404 and "nope" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        c.show("nope")
    assert caught.value.status_code == 404

    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    for method, path, content, status in [
        ("POST", "/api/chat", b"{not json", 400),
        ("POST", "/api/chat", b'{"model": "auto", "messages": [{"role": "robot"}]}', 400),
        ("POST", "/api/generate", b'{"model": "auto", "prompt": "x", "suffix": "y"}', 400),
        ("GET", "/api/chat", b"", 405),
        ("POST", "/api/pull", b'{"model": "llama3"}', 404),
    ]:
        response = httpx.request(method, f"{gateway.url}{path}", headers=headers, content=content)
        assert response.status_code == status, (path, response.text)
        assert isinstance(response.json()["error"], str) and response.json()["error"], path


def test_every_route_exhausted_is_a_429_with_retry_after(gateway, emulator):
    add_provider(emulator, "busy", ["b;429=30"], ["llama"])
    add_chain("auto", ["busy/llama"])
    response = httpx.post(f"{gateway.url}/api/chat", headers={"Authorization": f"Bearer {gateway.api_key}"},
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "rate-limited" in response.json()["error"]
