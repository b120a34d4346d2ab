"""Gemini's native front door (/v1beta) through the live gateway, with Google's official `google-genai` SDK.

The SDK talks to the gateway as it would to generativelanguage.googleapis.com; the emulator plays the
upstreams (OpenAI-compatible and native Gemini), so failover, stickiness and the request log are the real ones.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.emulator.content import TINY_PNG
from tests.emulator.gemini import SIGNATURE
from tests.fixtures_gateway import add_chain, add_provider, reorder_chain

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Current weather",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]),
)
TOOLS = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])


_clients: list[genai.Client] = []


def gemini(gateway, key: str | None = None) -> genai.Client:
    # No retries (the SDK's default too): a test sees the gateway's first answer. google-genai 3 defaults to
    # Google's v1; the Gemini front door is v1beta (what Gemini CLI and the JS SDK use), so it is named.
    client = genai.Client(api_key=key or gateway.api_key,
                          http_options=types.HttpOptions(base_url=gateway.url, api_version="v1beta", timeout=30_000))
    # A client closes its connection pool when collected: keep it while the test's calls run.
    _clients.append(client)
    del _clients[:-4]
    return client


def headers_of(response) -> dict:
    return response.sdk_http_response.headers


@pytest.fixture
def groq(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], [{"model_id": "llama", "supports_tools": True, "supports_json": True,
                                             "supports_vision": True}])
    add_chain("auto", ["groq/llama"])


def test_generate_content_answers_with_usage_and_the_trail(gateway, emulator, groq):
    response = gemini(gateway).models.generate_content(
        model="auto", contents="hello gemini",
        config=types.GenerateContentConfig(system_instruction="Be terse.", temperature=0.3, top_p=0.8,
                                           max_output_tokens=40, stop_sequences=["END"]),
    )

    assert response.text == "Echo: hello gemini"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == "groq/llama"
    assert headers_of(response)["x-freellm-provider"] == "groq"
    sent = emulator.calls[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert {k: sent[k] for k in ("temperature", "top_p", "max_tokens", "stop")} == {
        "temperature": 0.3, "top_p": 0.8, "max_tokens": 40, "stop": ["END"]}


def test_streamed_generation_arrives_in_pieces_and_ends_with_usage(gateway, groq):
    chunks = list(gemini(gateway).models.generate_content_stream(model="auto", contents="stream me please"))

    texts = [c.text for c in chunks if c.text]
    assert "".join(texts) == "Echo: stream me please" and len(texts) >= 3
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count > 0


def test_a_stream_that_breaks_after_the_first_byte_ends_with_an_error_the_sdk_raises(gateway, emulator):
    add_provider(emulator, "groq", ["a;drop=2"], ["llama"])
    add_chain("auto", ["groq/llama"])
    received = []
    with pytest.raises(errors.ServerError) as caught:
        for chunk in gemini(gateway).models.generate_content_stream(model="auto", contents="tell me a long story"):
            received.append(chunk.text)
    assert received and caught.value.code == 502 and caught.value.status == "UNAVAILABLE"
    assert "stream" in caught.value.message


def test_the_json_array_stream_without_alt_sse(gateway, groq):
    response = httpx.post(f"{gateway.url}/v1beta/models/auto:streamGenerateContent",
                          headers={"x-goog-api-key": gateway.api_key},
                          json={"contents": [{"parts": [{"text": "as an array"}]}]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    events = response.json()
    assert "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"]) == "Echo: as an array"
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


def _function_calling_round_trip(client, model: str, *, stream: bool):
    question = types.Content(role="user", parts=[types.Part(text="call tool for Oslo")])
    if stream:
        chunks = list(client.models.generate_content_stream(model=model, contents=[question], config=TOOLS))
        parts = [p for c in chunks for p in (c.candidates[0].content.parts or []) if p.function_call]
        turn = types.Content(role="model", parts=parts)
    else:
        first = client.models.generate_content(model=model, contents=[question], config=TOOLS)
        [call] = first.function_calls
        assert first.candidates[0].finish_reason == types.FinishReason.STOP
        turn = first.candidates[0].content
        parts = turn.parts
    [part] = parts
    assert part.function_call.name == "get_weather" and part.function_call.args == {"city": "echo"}
    answer = types.Content(role="user", parts=[types.Part.from_function_response(
        name="get_weather", response={"result": "sunny"})])
    return part, client.models.generate_content(model=model, contents=[question, turn, answer], config=TOOLS)


@pytest.mark.parametrize("stream", [False, True])
def test_function_calling_round_trip(gateway, emulator, groq, stream):
    _, final = _function_calling_round_trip(gemini(gateway), "auto", stream=stream)

    assert final.text == "Tool said: sunny"
    messages = emulator.calls[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
    assert emulator.calls[-1].body["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


def test_a_gemini_3_thought_signature_travels_back_to_its_upstream(gateway, emulator):
    add_provider(emulator, "gemini", ["ok"], [{"model_id": "gemini-3-flash-preview", "supports_tools": True}],
                 adapter="gemini", path="gemini/v1beta")
    part, final = _function_calling_round_trip(gemini(gateway), "gemini/gemini-3-flash-preview", stream=False)

    assert part.thought_signature == base64.b64decode(SIGNATURE)
    # The Gemini upstream got the response object, {"result": "sunny"}, and quotes it back.
    assert "sunny" in final.text
    # The emulator, like Gemini 3, refuses a history whose function call lost its signature.
    sent = emulator.calls[-1].body["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == SIGNATURE


def test_json_output_with_a_response_schema(gateway, emulator, groq):
    response = gemini(gateway).models.generate_content(
        model="auto", contents="as json please",
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=types.Schema(type=types.Type.OBJECT, properties={"echo": types.Schema(type=types.Type.STRING)}),
        ),
    )
    assert json.loads(response.text) == {"echo": "as json please"}
    assert emulator.calls[-1].body["response_format"]["json_schema"]["schema"] == {
        "type": "object", "properties": {"echo": {"type": "string"}}}


def test_an_inline_image_reaches_the_upstream_as_a_data_url(gateway, emulator, groq):
    gemini(gateway).models.generate_content(
        model="auto", contents=[types.Part.from_bytes(data=TINY_PNG, mime_type="image/png"), "what is it?"])
    [image, text] = emulator.calls[-1].body["messages"][0]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert text == {"type": "text", "text": "what is it?"}


def test_count_tokens_answers_without_calling_upstream(gateway, emulator, groq):
    counted = gemini(gateway).models.count_tokens(model="auto", contents="how many tokens is this sentence?")
    assert counted.total_tokens > 5
    assert emulator.calls == []


def test_embeddings_single_and_batch(gateway, emulator):
    add_provider(emulator, "mistral", ["ok"], [{"model_id": "mistral-embed", "kind": "embedding", "family": "me"}])
    result = gemini(gateway).models.embed_content(model="mistral-embed", contents=["one", "two"],
                                                  config=types.EmbedContentConfig(output_dimensionality=4))
    assert [len(e.values) for e in result.embeddings] == [4, 4]
    assert emulator.calls[-1].body["input"] == ["one", "two"] and emulator.calls[-1].body["dimensions"] == 4

    single = httpx.post(f"{gateway.url}/v1beta/models/mistral%2Fmistral-embed:embedContent",
                        params={"key": gateway.api_key}, json={"content": {"parts": [{"text": "one"}]}})
    assert single.status_code == 200
    assert len(single.json()["embedding"]["values"]) == 8


def test_models_list_and_get(gateway, groq):
    client = gemini(gateway)
    names = [m.name for m in client.models.list()]
    assert names == ["models/auto", "models/groq/llama"]
    # One per page: the SDK's pager follows nextPageToken.
    assert [m.name for m in client.models.list(config={"page_size": 1})] == names
    model = client.models.get(model="groq/llama")
    assert model.name == "models/groq/llama" and "generateContent" in model.supported_actions


def test_a_429_upstream_fails_over_and_a_conversation_stays_on_its_model(gateway, emulator):
    add_provider(emulator, "busy", ["b;429=30"], ["llama"])
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_provider(emulator, "cerebras", ["ok"], ["qwen"])
    add_chain("auto", ["busy/llama", "groq/llama", "cerebras/qwen"])
    client = gemini(gateway)

    first = client.models.generate_content(model="auto", contents="Plan a weekend in Lisbon.")
    assert headers_of(first)["x-freellm-provider"] == "groq"
    assert headers_of(first)["x-freellm-trail"].startswith("busy/llama/busy-0 -> rate_limited")

    # Put cerebras first: the conversation that began on groq stays there, a new one follows the new order.
    reorder_chain("auto", ["cerebras/qwen", "busy/llama", "groq/llama"])
    again = client.models.generate_content(model="auto", contents=[
        types.Content(role="user", parts=[types.Part(text="Plan a weekend in Lisbon.")]),
        types.Content(role="model", parts=[types.Part(text=first.text)]),
        types.Content(role="user", parts=[types.Part(text="And where to eat?")]),
    ])
    assert headers_of(again)["x-freellm-provider"] == "groq"
    other = client.models.generate_content(model="auto", contents="Something else entirely.")
    assert headers_of(other)["x-freellm-provider"] == "cerebras"


def test_every_route_exhausted_is_resource_exhausted_with_retry_info(gateway, emulator):
    add_provider(emulator, "busy", ["b;429=30"], ["llama"])
    add_chain("auto", ["busy/llama"])
    with pytest.raises(errors.ClientError) as caught:
        gemini(gateway).models.generate_content(model="auto", contents="hi")
    error = caught.value
    assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
    retry = [d for d in error.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry and retry[0]["retryDelay"].endswith("s")


def test_the_unified_key_is_taken_from_header_query_or_bearer(gateway, groq):
    url = f"{gateway.url}/v1beta/models/auto:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    for sent in ({"headers": {"x-goog-api-key": gateway.api_key}}, {"params": {"key": gateway.api_key}},
                 {"headers": {"Authorization": f"Bearer {gateway.api_key}"}}):
        response = httpx.post(url, json=body, **sent)
        assert response.status_code == 200, (sent, response.text)
        assert response.json()["candidates"][0]["content"]["parts"] == [{"text": "Echo: hi"}]


def test_errors_come_in_google_shape(gateway, groq):
    with pytest.raises(errors.ClientError) as caught:
        gemini(gateway, key="fl-wrong").models.generate_content(model="auto", contents="hi")
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")

    with pytest.raises(errors.ClientError) as caught:
        gemini(gateway).models.generate_content(model="nope", contents="hi")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert "nope" in caught.value.message

    headers = {"x-goog-api-key": gateway.api_key}
    cases = [
        ("POST", "/v1beta/models/auto:generateContent", b"{not json", 400, "INVALID_ARGUMENT"),
        ("POST", "/v1beta/models/auto:generateContent", b'{"contents": []}', 400, "INVALID_ARGUMENT"),
        ("POST", "/v1beta/models/auto:frobnicate", b"{}", 404, "NOT_FOUND"),
        ("DELETE", "/v1beta/models/auto:generateContent", b"", 405, "INVALID_ARGUMENT"),
        ("GET", "/v1beta/models/auto:generateContent", b"", 404, "NOT_FOUND"),
        ("GET", "/v1beta/nothing-here", b"", 404, "NOT_FOUND"),
    ]
    for method, path, content, status, name in cases:
        response = httpx.request(method, f"{gateway.url}{path}", headers=headers, content=content)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert (error["code"], error["status"]) == (status, name) and error["message"], path


def test_a_chat_request_is_logged_with_its_user(gateway, groq):
    from analytics.models import RequestLog
    from tests.fixtures_gateway import wait_until_idle

    gemini(gateway).models.generate_content(model="auto", contents="log me")
    wait_until_idle()
    row = RequestLog.objects.get()
    assert (row.endpoint, row.dialect, row.requested_model, row.provider, row.status_code) == (
        "chat", "gemini", "auto", "groq", 200)
    assert row.user.username == "alice"
