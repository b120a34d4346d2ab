"""/v1/models (list, ?available=true, retrieve one) and the OpenAPI description of the whole /v1 API."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider


@pytest.fixture
def catalog(gateway, emulator):
    add_provider(emulator, "groq", ["g;429=60"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_provider(emulator, "keyless-free", [], ["open"], keyless=True)
    add_provider(emulator, "nokey", [], ["orphan"])
    add_provider(emulator, "cloudflare", ["ok"], ["@cf/meta/llama"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    add_chain("groq-only", ["groq/llama"])
    return gateway


def _ids(gateway, **params) -> set[str]:
    resp = httpx.get(f"{gateway.base_url}/models", params=params,
                     headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert resp.status_code == 200, resp.text
    return {entry["id"] for entry in resp.json()["data"]}


def test_available_hides_what_cannot_serve_now(catalog, emulator):
    everything = {"auto", "groq-only", "groq/llama", "gemini/flash", "keyless-free/open", "nokey/orphan",
                  "cloudflare/@cf/meta/llama"}
    assert _ids(catalog) == everything
    # No key at all: listed, never available.
    assert _ids(catalog, available="true") == everything - {"nokey/orphan"}

    # A 429 with Retry-After cools groq down: its model and the chain made of it alone drop out; `auto`
    # still has gemini.
    catalog.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert len(emulator.calls_for(provider="groq")) == 1
    assert _ids(catalog, available="true") == everything - {"nokey/orphan", "groq/llama", "groq-only"}
    assert _ids(catalog, available="false") == everything


def test_retrieve_one_model_or_chain(catalog):
    client = catalog.openai()
    chain = client.models.retrieve("auto")
    assert (chain.id, chain.owned_by) == ("auto", "freellm")
    assert chain.model_extra["chain"] == ["groq/llama", "gemini/flash"]
    # The SDK escapes the slashes of route names; the gateway finds them all the same.
    model = client.models.retrieve("cloudflare/@cf/meta/llama")
    assert (model.id, model.owned_by) == ("cloudflare/@cf/meta/llama", "cloudflare")
    raw = httpx.get(f"{catalog.base_url}/models/gemini/flash", headers={"Authorization": f"Bearer {catalog.api_key}"})
    assert raw.json()["id"] == "gemini/flash"

    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("groq/nope")
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"


def test_models_need_a_key(catalog):
    resp = httpx.get(f"{catalog.base_url}/models/auto")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


def test_openapi_describes_every_endpoint_and_how_to_authenticate(gateway):
    schema = httpx.get(f"{gateway.base_url}/openapi.json").json()
    operations = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert operations == {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/{response_id}"),
        ("DELETE", "/v1/responses/{response_id}"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model}"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/speech"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/freellm/routes"),
        ("GET", "/v1/freellm/requests/{request_id}"),
    }
    schemes = schema["components"]["securitySchemes"]
    assert [scheme["scheme"] for scheme in schemes.values()] == ["bearer"]
    assert all(op.get("security") for ops in schema["paths"].values() for op in ops.values())
    assert all(op.get("summary") for ops in schema["paths"].values() for op in ops.values())

    docs = httpx.get(f"{gateway.base_url}/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
