"""schemathesis against the OpenAPI schema, bounded (a few examples per operation and mode, a time cap),
through a real socket with the emulator as upstream: schema-valid and schema-violating requests alike get
no 500, every error is in its dialect's shape (OpenAI's; Anthropic's on /v1/messages), and every response
has a documented status and content type."""

from __future__ import annotations

import time

import httpx
from hypothesis import HealthCheck, Phase, given, settings

from tests.fixtures_gateway import add_chain, add_provider

MAX_EXAMPLES = 25
TIME_CAP_SECONDS = 35.0


def _operations():
    import schemathesis

    from routing.api.app import api

    schema = schemathesis.openapi.from_dict(api.get_openapi_schema(path_prefix="/v1"))
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_documents_error_responses_in_openai_shape(gateway):
    schema = httpx.get(f"{gateway.base_url}/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "401", "404", "413", "422", "429", "500", "502", "503", "504"} <= documented, (method, path)
            assert operation["responses"]["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert schema["components"]["schemas"]["Error"]["properties"]["error"]["required"] == ["message", "type"]


def _fuzz(operation, mode, gateway, deadline: float, seen: dict[int, int]) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    if mode == GenerationMode.POSITIVE:
        # Body conformance holds for what the schema describes; what it rejects gets a 4xx, checked below.
        checks.append(response_schema_conformance)

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        if time.monotonic() > deadline:
            return  # the time cap: the remaining examples are not sent
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {gateway.api_key}"}
        response = case.call(base_url=gateway.url, timeout=20)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text[:500]
        if response.status_code >= 400:
            body = response.json()
            error = body["error"]
            assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
            if operation.path.startswith("/v1/messages"):
                assert body["type"] == "error"  # Anthropic's envelope, that dialect's own error shape
            else:
                assert set(error) >= {"message", "type", "param", "code"}
        case.validate_response(response, checks=checks)

    run()


def test_fuzzing_every_operation_gives_no_500_and_openai_shaped_errors(gateway, emulator):
    from schemathesis import GenerationMode

    add_provider(emulator, "groq", ["ok"], ["llama", {"model_id": "embed", "kind": "embedding", "family": "e"}])
    add_chain("auto", ["groq/llama"])
    deadline = time.monotonic() + TIME_CAP_SECONDS
    seen: dict[int, int] = {}

    for operation in _operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, gateway, deadline, seen)

    assert seen, "nothing was sent"
    assert 500 not in seen
