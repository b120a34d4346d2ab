"""Embeddings and the model list through the live gateway with the official openai client."""

from __future__ import annotations

from tests.fixtures_gateway import add_chain, add_provider


def test_embeddings_for_a_string_and_a_list(gateway, emulator):
    add_provider(emulator, "mistral", ["ok"], [{"model_id": "mistral-embed", "kind": "embedding", "family": "me"}])
    client = gateway.openai()
    one = client.embeddings.create(model="mistral-embed", input="hello")
    assert len(one.data) == 1 and len(one.data[0].embedding) > 0
    many = client.embeddings.create(model="mistral/mistral-embed", input=["a", "b", "c"], dimensions=4)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert emulator.calls_for(provider="mistral")[-1].body["dimensions"] == 4


def test_embeddings_base64(gateway, emulator):
    add_provider(emulator, "mistral", ["ok"], [{"model_id": "mistral-embed", "kind": "embedding", "family": "me"}])
    # The openai client asks for base64 by default and decodes it.
    resp = gateway.openai().embeddings.create(model="mistral-embed", input="hello", encoding_format="base64")
    assert isinstance(resp.data[0].embedding, str)


def test_models_lists_chains_and_models(gateway, emulator):
    add_provider(emulator, "groq", ["ok"], ["llama"])
    add_provider(emulator, "busy", ["k"], [{"model_id": "m", "rpm": 1}])
    add_chain("auto", ["groq/llama"])
    client = gateway.openai()
    ids = {m.id for m in client.models.list()}
    assert ids == {"auto", "groq/llama", "busy/m"}
    client.chat.completions.create(model="busy/m", messages=[{"role": "user", "content": "hi"}])
    import httpx

    available = httpx.get(f"{gateway.base_url}/models?available=true",
                          headers={"Authorization": f"Bearer {gateway.api_key}"}).json()
    assert {m["id"] for m in available["data"]} == {"auto", "groq/llama"}


def test_openapi_docs_are_served(gateway):
    import httpx

    assert httpx.get(f"{gateway.base_url}/docs").status_code == 200
    assert "/v1/chat/completions" in httpx.get(f"{gateway.base_url}/openapi.json").json()["paths"]
