"""The MCP server at /mcp through the official `mcp` client (streamable HTTP) on the live gateway's socket."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures_gateway import add_chain, add_provider
from tests.polling import wait_until

TOOLS = {"list_models", "route_health", "usage_summary", "explain_request"}


async def _session_calls(url: str, key: str, calls: list[tuple[str, dict]]):
    """(tool names, [CallToolResult...]) from one MCP session with ``key``."""
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        results = [await session.call_tool(name, args) for name, args in calls]
    return {tool.name: tool for tool in tools.tools}, results


def mcp_calls(gateway, key: str, *calls: tuple[str, dict]):
    return asyncio.run(_session_calls(gateway.url, key, list(calls)))


def _json(result) -> dict:
    assert not result.isError, result.content
    # Structured output and the text block say the same.
    assert json.loads(result.content[0].text) == result.structuredContent
    return result.structuredContent


@pytest.fixture
def team_gateway(gateway, emulator, django_user_model):
    """alice (member, the gateway's key), bob (member) and sam (staff), each with a key; two providers and a chain."""
    from django.contrib.auth.models import Group

    from routing.services import MEMBERS_GROUP, STAFF_GROUP, api_key_create, team_groups_sync

    groups = team_groups_sync()
    alice = django_user_model.objects.get(username="alice")
    alice.groups.add(groups[MEMBERS_GROUP])
    bob = django_user_model.objects.create_user("bob", is_staff=True)
    bob.groups.add(groups[MEMBERS_GROUP])
    sam = django_user_model.objects.create_user("sam", is_staff=True)
    sam.groups.add(Group.objects.get(name=STAFF_GROUP))
    add_provider(emulator, "groq", ["g;429=60"], [{"model_id": "llama", "supports_tools": True}])
    add_provider(emulator, "gemini", ["ok"], [{"model_id": "flash", "supports_vision": True, "context_window": 8000}])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    return SimpleNamespace(gateway=gateway, alice=gateway.api_key, bob=api_key_create(user=bob, name="b")[1],
                           sam=api_key_create(user=sam, name="s")[1])  # fmt: skip


def _chat(gateway, key: str, text: str) -> str:
    """One chat through /v1 with ``key``; its request id once its log row is written."""
    import openai

    from analytics.models import RequestLog

    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    request_id = raw.headers["x-freellm-request-id"]
    wait_until(lambda: RequestLog.objects.filter(request_id=request_id).exists())
    return request_id


def test_without_a_valid_key_401(gateway):
    for headers in ({}, {"Authorization": "Bearer fl-not-a-key"}):
        resp = httpx.post(f"{gateway.url}/mcp", headers={**headers, "Accept": "application/json, text/event-stream"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in resp.json()["error"]["message"]
    # The official client gives up on the 401 (raised out of its task group).
    with pytest.raises(Exception) as refused:  # noqa: B017
        mcp_calls(gateway, "fl-not-a-key")
    assert "401" in repr(getattr(refused.value, "exceptions", refused.value))


def test_tools_listed_and_read_only(team_gateway):
    tools, _ = mcp_calls(team_gateway.gateway, team_gateway.alice)
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.annotations.readOnlyHint is True and tool.description
    assert tools["explain_request"].inputSchema["required"] == ["request_id"]


def test_list_models_capabilities_and_headroom(team_gateway):
    # groq's key is rate-limited: after one request its route cools down and only gemini serves `auto`.
    _chat(team_gateway.gateway, team_gateway.alice, "hi")
    _, (result, embeddings) = mcp_calls(team_gateway.gateway, team_gateway.alice, ("list_models", {}),
                                        ("list_models", {"kind": "embedding"}))
    assert _json(embeddings) == {"models": []}
    models = {m["id"]: m for m in _json(result)["models"]}
    assert set(models) == {"auto", "groq/llama", "gemini/flash"}
    auto = models["auto"]
    assert (auto["type"], auto["chain"]) == ("chain", ["groq/llama", "gemini/flash"])
    assert auto["capabilities"] == {"tools": True, "vision": True, "json": False, "context_window": 8000}
    assert auto["headroom"]["routes"] == 2 and auto["headroom"]["usable_routes"] == 1
    assert models["groq/llama"]["headroom"] == {"usable_routes": 0, "routes": 1, "best": 0.0}
    assert models["gemini/flash"]["headroom"]["usable_routes"] == 1
    assert 0 < models["gemini/flash"]["headroom"]["best"] <= 1


def test_route_health_shows_the_open_breaker(team_gateway):
    _chat(team_gateway.gateway, team_gateway.alice, "hi")
    _, (result,) = mcp_calls(team_gateway.gateway, team_gateway.sam, ("route_health", {}))
    routes = {r["route"]: r for r in _json(result)["routes"]}
    assert set(routes) == {"groq/llama", "gemini/flash"}
    groq = routes["groq/llama"]
    assert groq["key"] == "groq-0" and groq["cooldown_seconds"] > 30 and groq["cooldown_until"]
    assert routes["gemini/flash"]["state"] == "closed" and routes["gemini/flash"]["cooldown_until"] is None
    assert routes["gemini/flash"]["windows"]["rpm"]["used"] == 1
    # No secret in it: the key is its label.
    assert "g;429" not in result.content[0].text and "ok" not in {r["key"] for r in routes.values()}
    assert _json(result)["usable"] == 1

    # A member gets the routes of what they may use (here every chain and model), the same state.
    _, (by_member,) = mcp_calls(team_gateway.gateway, team_gateway.bob, ("route_health", {}))
    assert {r["route"]: r["state"] for r in _json(by_member)["routes"]} == {
        name: r["state"] for name, r in routes.items()}


def test_usage_summary_own_key_and_staff_per_user(team_gateway):
    gw = team_gateway.gateway
    _chat(gw, team_gateway.alice, "one")
    _chat(gw, team_gateway.alice, "two")
    _chat(gw, team_gateway.bob, "three")
    _, (alice,) = mcp_calls(gw, team_gateway.alice, ("usage_summary", {}))
    alice = _json(alice)
    assert alice["key"]["today"]["requests"] == 2 and alice["key"]["month"]["requests"] == 2
    assert alice["key"]["today"]["total_tokens"] > 0
    assert "users" not in alice  # a member sees no one else's

    _, (sam,) = mcp_calls(gw, team_gateway.sam, ("usage_summary", {}))
    sam = _json(sam)
    assert sam["key"]["today"]["requests"] == 0
    assert [(u["user"], u["today"]["requests"]) for u in sam["users"]] == [("alice", 2), ("bob", 1)]


def test_explain_request_only_own_for_members(team_gateway):
    gw = team_gateway.gateway
    alices = _chat(gw, team_gateway.alice, "alice's question")
    bobs = _chat(gw, team_gateway.bob, "bob's question")
    _, (own, foreign) = mcp_calls(gw, team_gateway.alice, ("explain_request", {"request_id": alices}),
                                  ("explain_request", {"request_id": bobs}))
    own = _json(own)
    assert own["requested_model"] == "auto" and own["provider"] == "gemini" and own["attempts"] == 2
    # groq answered 429, gemini served it.
    assert [step["route"].split("/")[0] for step in own["trail"]] == ["groq", "gemini"]
    assert own["trail"][-1]["outcome"] == "ok" and own["trail"][0]["outcome"] != "ok"
    assert foreign.isError and "No request with id" in foreign.content[0].text

    _, (by_staff,) = mcp_calls(gw, team_gateway.sam, ("explain_request", {"request_id": bobs}))
    assert _json(by_staff)["id"] == bobs
