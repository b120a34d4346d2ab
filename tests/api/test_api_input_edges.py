"""Odd and hostile input at the /v1 edge: every answer is OpenAI-shaped, names the culprit, and calls no upstream."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def configured(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], [{"model_id": "llama", "supports_tools": True}])
    add_chain("auto", ["groq/llama"])
    return gateway


def _headers(gw, **extra):
    return {"Authorization": f"Bearer {gw.api_key}", **extra}


def _error(resp, status):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/chat/completions", "POST"),
    ("PUT", "/embeddings", "POST"),
    ("DELETE", "/models", "GET"),
    ("GET", "/images/generations", "POST"),
    ("GET", "/audio/transcriptions", "POST"),
    ("HEAD", "/audio/speech", "POST"),
])
def test_wrong_method_is_a_405_in_openai_shape(configured, emulator, method, path, allowed):
    resp = httpx.request(method, f"{configured.base_url}{path}", headers=_headers(configured))
    assert resp.headers["Allow"] == allowed
    if method != "HEAD":
        error = _error(resp, 405)
        assert method in error["message"] and allowed in error["message"]
    assert resp.status_code == 405
    assert emulator.calls == []


def test_deeply_nested_body_is_a_400_not_a_crash(configured, emulator):
    depth = 900  # parses with json.loads, but deeper than any real request
    body = b'{"model":"auto","messages":[{"role":"user","content":' + b"[" * depth + b'"x"' + b"]" * depth + b"}]}"
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", content=body,
                              headers=_headers(configured, **{"Content-Type": "application/json"})), 400)
    assert "nested" in error["message"]
    assert emulator.calls == []
    # Nesting a real request needs (tools with JSON schemas, content parts) still goes through.
    tool = {"type": "function", "function": {"name": "f", "parameters": _nested_schema(12)}}
    resp = httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "tools": [tool]},
                      headers=_headers(configured))
    assert resp.status_code == 200, resp.text


def _nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize(("content", "reason"), [
    (b'{"model": "auto", "messages": [', "unexpected end of data: line 1 column 32"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\xff"}]}', "not valid UTF-8"),
    # A lone surrogate would go upstream as text no provider can read (and failed later as a 500).
    (b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}', "no low surrogate"),
])
def test_unparseable_body_says_why(configured, content, reason):
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", content=content,
                              headers=_headers(configured, **{"Content-Type": "application/json"})), 400)
    assert error["message"].startswith("We could not parse the JSON body of your request")
    assert reason in error["message"]


@pytest.mark.parametrize("body", [b"[1, 2]", b"null", b'"text"', b"42"])
def test_body_that_is_not_an_object_is_a_400_saying_so(configured, body):
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", content=body,
                              headers=_headers(configured, **{"Content-Type": "application/json"})), 400)
    assert error["message"] == "The request body must be a JSON object."
    assert "ChatCompletionRequest" not in error["message"]


def test_form_data_to_a_json_endpoint_is_a_400(configured, emulator):
    resp = httpx.post(f"{configured.base_url}/chat/completions", data={"model": "auto", "messages": "hi"},
                      headers=_headers(configured))
    _error(resp, 400)
    assert emulator.calls == []


@pytest.mark.parametrize("value", ["yes", "true", 1])
def test_stream_must_be_a_boolean(configured, emulator, value):
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "stream": value},
                              headers=_headers(configured)), 400)
    assert error["param"] == "stream"
    assert emulator.calls == []


def test_stream_null_means_no_stream(configured):
    # OpenAI's schema: "boolean or null, defaults to false".
    resp = httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "stream": None},
                      headers=_headers(configured))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"


def test_several_choices_are_refused_with_the_reason(configured, emulator):
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "n": 3},
                              headers=_headers(configured)), 400)
    assert error["param"] == "n"
    assert error["message"].startswith("n: ") and "one choice" in error["message"]
    assert emulator.calls == []
    assert httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "n": 1},
                      headers=_headers(configured)).status_code == 200


def test_query_parameter_errors_name_the_parameter(configured):
    error = _error(httpx.get(f"{configured.base_url}/models", params={"available": "maybe"},
                             headers=_headers(configured)), 400)
    assert error["param"] == "available"
    assert error["message"].startswith("available: ")


def test_unicode_everywhere_round_trips(configured, emulator):
    text = "héllo 👋 世界"
    resp = httpx.post(f"{configured.base_url}/chat/completions",
                      json={**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]},
                      headers=_headers(configured, **{"X-Session-Id": "sitzung-ü-🎉".encode()}))
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == f"Echo: {text}"
    assert emulator.calls[0].body["messages"][0]["content"] == [{"type": "text", "text": text}]


def test_very_long_model_name_is_a_404(configured, emulator):
    _error(httpx.post(f"{configured.base_url}/chat/completions", json={**CHAT, "model": "m" * 5000},
                      headers=_headers(configured)), 404)
    assert emulator.calls == []


def test_a_gateway_bug_is_a_500_in_openai_shape(configured, settings):
    # A broken setting makes the token estimate raise: the client still gets OpenAI's shape, no HTML page.
    settings.FREELLM_OUTPUT_RESERVE = None
    error = _error(httpx.post(f"{configured.base_url}/chat/completions", json=CHAT, headers=_headers(configured)), 500)
    assert error["code"] == "internal_error" and "Traceback" not in error["message"]


@pytest.mark.parametrize("value", ["", [], [""], [[]]])
def test_empty_embedding_input_is_a_400_without_calling_upstream(gateway, emulator, value):
    add_provider(emulator, "groq", ["ok"], [{"model_id": "embed", "kind": "embedding", "family": "e"}])
    error = _error(httpx.post(f"{gateway.base_url}/embeddings", json={"model": "groq/embed", "input": value},
                              headers=_headers(gateway)), 400)
    assert error["param"] == "input" and "empty" in error["message"]
    assert emulator.calls == []
