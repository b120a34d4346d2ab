"""Model aliases through the gateway: a name the config does not know is served by the alias' target, and the
trail headers say which chain (and alias) served."""

from __future__ import annotations

import openai
import pytest

from providers.models import ModelAlias
from tests.fixtures_gateway import add_chain, add_provider

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def coding(emulator):
    add_provider(emulator, "groq", ["g"], ["llama"])
    add_provider(emulator, "mistral", ["m"], ["codestral", {"model_id": "embed", "kind": "embedding",
                                                            "family": "m-embed"}])
    add_chain("coding", ["mistral/codestral", "groq/llama"])
    ModelAlias.objects.create(pattern="claude-*", target="coding", position=1)
    ModelAlias.objects.create(pattern="gpt-5*", target="groq/llama", position=2)
    ModelAlias.objects.create(pattern="text-embedding-*", target="mistral/embed", position=3)


def test_an_aliased_name_is_served_by_its_chain_and_the_headers_say_so(gateway, emulator, coding):
    raw = gateway.openai().chat.completions.with_raw_response.create(model="claude-sonnet-4-5-20250929",
                                                                     messages=HI)

    assert raw.parse().choices[0].message.content == "Echo: hi"
    assert raw.headers["X-FreeLLM-Chain"] == "coding"
    assert raw.headers["X-FreeLLM-Alias"] == "claude-*"
    assert raw.headers["X-FreeLLM-Provider"] == "mistral"


def test_streams_and_explicit_targets_and_exact_names(gateway, emulator, coding):
    client = gateway.openai()
    with client.chat.completions.with_streaming_response.create(model="gpt-5-codex", messages=HI,
                                                                stream=True) as response:
        assert "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices) == "Echo: hi"
        assert response.headers["X-FreeLLM-Alias"] == "gpt-5*"
        assert response.headers["X-FreeLLM-Provider"] == "groq"
        assert "X-FreeLLM-Chain" not in response.headers

    exact = client.chat.completions.with_raw_response.create(model="coding", messages=HI)
    assert exact.headers["X-FreeLLM-Chain"] == "coding" and "X-FreeLLM-Alias" not in exact.headers


def test_embeddings_resolve_aliases_too(gateway, emulator, coding):
    raw = gateway.openai().embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")

    assert len(raw.parse().data) == 1
    assert raw.headers["X-FreeLLM-Alias"] == "text-embedding-*"
    assert raw.headers["X-FreeLLM-Model"] == "embed"


def test_an_alias_added_later_is_used_at_once_and_unknown_names_stay_404(gateway, emulator, coding):
    client = gateway.openai()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="o3-mini", messages=HI)

    ModelAlias.objects.create(pattern="o3*", target="coding", position=4)

    assert client.chat.completions.create(model="o3-mini", messages=HI).choices[0].message.content == "Echo: hi"


def test_retrieving_an_aliased_name_describes_its_target(gateway, emulator, coding):
    client = gateway.openai()

    model = client.models.retrieve("claude-opus-4-1")

    assert model.id == "claude-opus-4-1"
    assert model.model_extra["alias"] == {"pattern": "claude-*", "target": "coding"}
    assert model.model_extra["chain"] == ["mistral/codestral", "groq/llama"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("llama-9000")
