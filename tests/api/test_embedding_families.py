"""Embedding failover stays inside one family: never a vector from another model, a 503 naming the family."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider


def bge(model_id: str, dims: int = 1024) -> dict:
    return {"model_id": model_id, "kind": "embedding", "family": "bge-m3", "dimensions": dims}


GEMINI_EMBED = {"model_id": "gemini-embedding-001", "kind": "embedding", "family": "gemini-embedding-001",
                "dimensions": 3072}


def test_bare_model_id_is_served_by_another_provider_of_its_family(gateway, emulator):
    add_provider(emulator, "cloudflare", ["c;429=30"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "siliconflow", ["s"], [bge("BAAI/bge-m3")])
    add_provider(emulator, "gemini", ["g"], [GEMINI_EMBED])
    raw = gateway.openai().embeddings.with_raw_response.create(model="@cf/baai/bge-m3", input=["hello"],
                                                                dimensions=1024)
    assert raw.headers["X-FreeLLM-Provider"] == "siliconflow"
    assert len(raw.parse().data[0].embedding) == 1024
    sent = emulator.calls_for(provider="siliconflow")[0].body
    assert sent["model"] == "BAAI/bge-m3" and sent["dimensions"] == 1024
    assert emulator.calls_for(provider="gemini") == []


def test_family_name_is_accepted_as_model(gateway, emulator):
    add_provider(emulator, "siliconflow", ["s"], [bge("BAAI/bge-m3")])
    raw = gateway.openai().embeddings.with_raw_response.create(model="bge-m3", input="hello")
    assert raw.headers["X-FreeLLM-Model"] == "BAAI/bge-m3"


def test_only_healthy_fallback_in_another_family_is_an_error_not_a_vector(gateway, emulator):
    add_provider(emulator, "cloudflare", ["c;500"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "siliconflow", ["s;429=30"], [bge("BAAI/bge-m3")])
    add_provider(emulator, "gemini", ["g"], [GEMINI_EMBED])
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.openai().embeddings.create(model="@cf/baai/bge-m3", input="hello")
    assert caught.value.status_code == 503
    error = caught.value.body
    assert error["code"] == "embedding_family_unavailable"
    assert "bge-m3 (1024 dims)" in error["message"]
    assert emulator.calls_for(provider="gemini") == []


def test_same_family_with_other_dimensions_is_another_family(gateway, emulator):
    add_provider(emulator, "cloudflare", ["c;500"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "other", ["o"], [bge("bge-m3-small", dims=384)])
    with pytest.raises(openai.InternalServerError):
        gateway.openai().embeddings.create(model="@cf/baai/bge-m3", input="hello")
    assert emulator.calls_for(provider="other") == []


def test_chain_fails_over_inside_its_family(gateway, emulator):
    add_provider(emulator, "cloudflare", ["c;500"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "siliconflow", ["s"], [bge("BAAI/bge-m3")])
    add_chain("vectors", ["cloudflare/@cf/baai/bge-m3", "siliconflow/BAAI/bge-m3"], kind="embedding")
    raw = gateway.openai().embeddings.with_raw_response.create(model="vectors", input="hello")
    assert raw.headers["X-FreeLLM-Provider"] == "siliconflow"


def test_mixed_chain_never_serves_the_other_family(gateway, emulator):
    # Import and admin refuse such a chain; the router still holds the line if one slips through.
    add_provider(emulator, "cloudflare", ["c;500"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "gemini", ["g"], [GEMINI_EMBED])
    add_chain("mixed", ["cloudflare/@cf/baai/bge-m3", "gemini/gemini-embedding-001"], kind="embedding")
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.openai().embeddings.create(model="mixed", input="hello")
    assert "bge-m3" in caught.value.body["message"]
    assert emulator.calls_for(provider="gemini") == []


def test_explicit_provider_model_is_served_by_that_model_only(gateway, emulator):
    add_provider(emulator, "cloudflare", ["c;500"], [bge("@cf/baai/bge-m3")])
    add_provider(emulator, "siliconflow", ["s"], [bge("BAAI/bge-m3")])
    with pytest.raises(openai.InternalServerError):
        gateway.openai().embeddings.create(model="cloudflare/@cf/baai/bge-m3", input="hello")
    assert emulator.calls_for(provider="siliconflow") == []
