"""Capability gating: requirements derived from a chat request, and which models can take it."""

from __future__ import annotations

from dataclasses import dataclass

from routing.gating import Requirements, chat_requirements, model_can_serve, no_capable_model_message


@dataclass
class FakeModel:
    name: str
    context_window: int | None = 8192
    supports_tools: bool = False
    supports_vision: bool = False
    supports_json: bool = False


TEXT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
IMAGE = {
    "model": "chat",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ],
}
TOOLS = {
    **TEXT,
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}


def test_plain_text_needs_nothing_special():
    req = chat_requirements(TEXT)
    assert (req.needs_vision, req.needs_tools, req.needs_json) == (False, False, False)
    assert 0 < req.prompt_tokens < 50
    assert model_can_serve(FakeModel("a/plain"), req) is None


def test_image_parts_need_vision():
    req = chat_requirements(IMAGE)
    assert req.needs_vision
    assert model_can_serve(FakeModel("a/text-only"), req) == "no vision"
    assert model_can_serve(FakeModel("a/vision", supports_vision=True), req) is None


def test_tools_and_legacy_functions_need_tool_calling():
    assert chat_requirements(TOOLS).needs_tools
    assert chat_requirements({**TEXT, "functions": [{"name": "f", "parameters": {}}]}).needs_tools
    assert not chat_requirements({**TEXT, "tools": []}).needs_tools
    assert model_can_serve(FakeModel("a/m"), chat_requirements(TOOLS)) == "no tool calling"
    assert model_can_serve(FakeModel("a/m", supports_tools=True), chat_requirements(TOOLS)) is None


def test_json_response_formats_need_json_mode():
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}):
        req = chat_requirements({**TEXT, "response_format": fmt})
        assert req.needs_json
        assert model_can_serve(FakeModel("a/m"), req) == "no JSON mode"
        assert model_can_serve(FakeModel("a/m", supports_json=True), req) is None
    assert not chat_requirements({**TEXT, "response_format": {"type": "text"}}).needs_json


def test_context_window_counts_prompt_and_requested_completion():
    long = {"model": "chat", "messages": [{"role": "user", "content": "word " * 6000}]}
    req = chat_requirements(long)
    assert req.prompt_tokens > 4000
    small, large = FakeModel("a/small", context_window=4096), FakeModel("a/large", context_window=131072)
    assert model_can_serve(small, req).startswith("context window 4,096 <")
    assert model_can_serve(large, req) is None
    # Unknown window: not held against the model.
    assert model_can_serve(FakeModel("a/unknown", context_window=None), req) is None
    # The completion the client asked for must fit too.
    short = chat_requirements({**TEXT, "max_tokens": 8190})
    assert short.completion_tokens == 8190
    assert model_can_serve(FakeModel("a/m", context_window=8192), short) is not None
    assert model_can_serve(FakeModel("a/m", context_window=8192), chat_requirements(TEXT)) is None


def test_tool_definitions_count_towards_the_prompt():
    many_tools = {
        **TEXT,
        "tools": [
            {"type": "function", "function": {"name": f"tool_{i}", "description": "does things " * 20}}
            for i in range(20)
        ],
    }
    assert chat_requirements(many_tools).prompt_tokens > chat_requirements(TEXT).prompt_tokens + 500


def test_no_capable_model_message_names_needs_and_reasons():
    req = Requirements(
        prompt_tokens=100, completion_tokens=0, needs_vision=True, needs_tools=True, needs_json=False
    )
    message = no_capable_model_message(
        "smart", req, [FakeModel("groq/llama"), FakeModel("gemini/flash", supports_vision=True)]
    )
    assert "'smart'" in message and "images" in message and "tools" in message
    assert "groq/llama: no vision" in message and "gemini/flash: no tool calling" in message
