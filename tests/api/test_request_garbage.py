"""A served request leaves no reference cycles: its objects go when it ends, not at a full garbage collection.

Cycles per request made the collector the gateway's largest single cost under load, and held each request's
objects (its body, its upstream answer's buffers) until a full collection came, so memory grew with prompt size.
Each front door is driven by its own official client, plain and streamed.
"""

from __future__ import annotations

import gc

import httpx
import ollama
import pytest
from django.core.handlers.asgi import ASGIRequest
from google import genai
from google.genai import types

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle

MESSAGES = [{"role": "user", "content": "hi there"}]


def _openai(gateway):
    client = gateway.openai()
    assert client.chat.completions.create(model="auto", messages=MESSAGES).choices[0].message.content
    assert list(client.chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert client.completions.create(model="auto", prompt="hi").choices[0].text
    assert client.embeddings.create(model="mistral/mistral-embed", input="hi").data


def _responses(gateway):
    client = gateway.openai()
    assert client.responses.create(model="auto", input="hi").output_text
    assert list(client.responses.create(model="auto", input="hi", stream=True))


def _anthropic(gateway):
    client = gateway.anthropic()
    assert client.messages.create(model="auto", max_tokens=64, messages=MESSAGES).content
    with client.messages.stream(model="auto", max_tokens=64, messages=MESSAGES) as stream:
        assert stream.get_final_text()


def _gemini(gateway):
    client = genai.Client(api_key=gateway.api_key,
                          http_options=types.HttpOptions(base_url=gateway.url, api_version="v1beta", timeout=30_000))
    assert client.models.generate_content(model="auto", contents="hi").text
    assert list(client.models.generate_content_stream(model="auto", contents="hi"))


def _ollama(gateway):
    client = ollama.Client(host=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=30)
    assert client.chat(model="auto", messages=MESSAGES, stream=False).message.content
    assert list(client.chat(model="auto", messages=MESSAGES, stream=True))


def _cyclic_garbage_after(make_requests) -> list[object]:
    """What the collector finds unreachable (and would have to free) once ``make_requests`` has run."""
    gc.collect()
    gc.disable()
    try:
        make_requests()
        wait_until_idle()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


@pytest.mark.parametrize("front_door", [_openai, _responses, _anthropic, _gemini, _ollama],
                         ids=["openai", "responses", "anthropic", "gemini", "ollama"])
def test_requests_leave_no_cycles(gateway, emulator, front_door):
    add_provider(emulator, "groq", ["g-a"], ["llama"])
    add_provider(emulator, "mistral", ["ok"], [{"model_id": "mistral-embed", "kind": "embedding", "family": "me"}])
    add_chain("auto", ["groq/llama"])
    front_door(gateway)  # the first call of a kind warms caches that live as long as the process
    garbage = _cyclic_garbage_after(lambda: [front_door(gateway) for _ in range(3)])
    requests = [o for o in garbage if isinstance(o, ASGIRequest)]
    # The gateway's own calls to the emulator (the clients' responses from the gateway are their own business).
    upstream = [o for o in garbage if isinstance(o, httpx.Response) and str(o.request.url).startswith(emulator.url)]
    ours = sorted({type(o).__qualname__ for o in garbage
                   if type(o).__module__.split(".")[0] in ("routing", "providers", "analytics", "freellm")})
    assert requests == []
    assert upstream == []
    assert ours == []
