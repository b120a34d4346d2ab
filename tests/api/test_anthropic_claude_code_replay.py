"""Claude-Code-shaped traffic replayed from a fixture through the live gateway: the headers, the `?beta=true`
path, system blocks with cache_control, JSON-schema tools, thinking, metadata.user_id and a streamed tool
loop of four turns. Read with raw HTTP and checked event by event, as a client that parses the stream
itself would, so the sequence must be exactly Anthropic's."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "claude_code_tool_loop.json").read_text())


def read_events(resp: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for frame in resp.text.split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(fields["data"])
        assert fields["event"] == data["type"]
        events.append((fields["event"], data))
    return events


def replay_message(events: list[tuple[str, dict]]) -> dict:
    """The message the events build, asserting Anthropic's grammar on the way: message_start first, then
    blocks started, deltaed and stopped one at a time with consecutive indexes, message_delta, message_stop."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    message = copy.deepcopy(events[0][1]["message"])
    assert message["content"] == [] and message["stop_reason"] is None
    open_index = None
    partial_json: dict[int, str] = {}
    for name, data in events[1:]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(message["content"])
            open_index = data["index"]
            message["content"].append(copy.deepcopy(data["content_block"]))
        elif name == "content_block_delta":
            assert data["index"] == open_index
            block, delta = message["content"][open_index], data["delta"]
            kind = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "tool_use"}[delta["type"]]
            assert block["type"] == kind
            if kind == "tool_use":
                partial_json[open_index] = partial_json.get(open_index, "") + delta["partial_json"]
            else:
                block[kind] += delta[kind]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            if open_index in partial_json:
                message["content"][open_index]["input"] = json.loads(partial_json[open_index])
            open_index = None
        elif name == "message_delta":
            assert open_index is None
            message.update(data["delta"])
            message["usage"].update(data["usage"])
        else:
            assert name in ("ping", "message_stop"), name
    return message


@pytest.fixture
def coding(emulator):
    caps = {"context_window": 200000, "supports_tools": True, "supports_vision": True}
    add_provider(emulator, "groq", ["g;think=1"], [{"model_id": "llama", **caps}])
    add_provider(emulator, "cerebras", ["c"], [{"model_id": "qwen", **caps}])
    add_chain("coding", ["groq/llama", "cerebras/qwen"])
    add_chain("coding-fast", ["cerebras/qwen"])


def test_claude_code_tool_loop_replays(gateway, emulator, coding):
    url = f"{gateway.url}{FIXTURE['path']}"
    # ANTHROPIC_AUTH_TOKEN: Claude Code sends the key as a bearer token.
    headers = {**FIXTURE["headers"], "authorization": f"Bearer {gateway.api_key}"}
    with httpx.Client(timeout=10) as client:
        quota = client.post(url, headers=headers, json=FIXTURE["quota"])
        assert quota.status_code == 200, quota.text
        assert quota.json()["type"] == "message" and quota.headers["X-FreeLLM-Provider"] == "cerebras"

        request = copy.deepcopy(FIXTURE["request"])
        tool_use_id = None
        for turn in FIXTURE["turns"]:
            resp = client.post(url, headers=headers, json=request)
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"].startswith("text/event-stream")
            # The session (metadata.user_id) stays on the model that took its first turn.
            assert resp.headers["X-FreeLLM-Provider"] == "groq"
            message = replay_message(read_events(resp))
            kinds = [block["type"] for block in message["content"]]
            assert kinds[0] == "thinking" and message["content"][0]["thinking"] == "thought 0. "
            if turn["expect"] == "tool_use":
                assert message["stop_reason"] == "tool_use" and kinds[-1] == "tool_use"
                use = message["content"][-1]
                assert use["name"] == "Bash" and use["input"]["command"] == "echo"
                tool_use_id = use["id"]
            else:
                assert message["stop_reason"] == "end_turn" and kinds[-1] == "text"
                assert message["content"][-1]["text"] == turn["text"]
            assert message["usage"]["output_tokens"] > 0
            # What Claude Code sends next: the whole answer back (thinking included), then the new user turn.
            request["messages"].append({"role": "assistant", "content": message["content"]})
            then = json.loads(json.dumps(turn["then"]).replace("{tool_use_id}", tool_use_id or ""))
            request["messages"].extend(then)

    calls = [call for call in emulator.calls if call.path.endswith("/chat/completions")]
    assert len(calls) == 1 + len(FIXTURE["turns"])
    last = calls[-1].body
    assert last["messages"][0]["role"] == "system"
    assert last["messages"][0]["content"].startswith("You are Claude Code")
    assert last["tools"][0]["function"]["parameters"]["$schema"].startswith("http://json-schema.org")
    assert last["reasoning_effort"] == "high" and last["max_tokens"] == 32000
    roles = [m["role"] for m in last["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
    assert last["messages"][-1]["content"] == "Error: cat: README.md: Permission denied"
