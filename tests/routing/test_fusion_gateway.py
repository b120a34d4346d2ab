"""Fusion chains through the gateway: a panel of members of distinct providers answers in parallel, then the
judge writes the answer (or one draft is picked); quota is charged for each call and the panel is listed."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle


def _fusion_chain(emulator, fusion: dict, *, keys: dict[str, str] | None = None, judge_key: str = "ok"):
    keys = keys or {}
    for slug in ("alpha", "beta", "gamma"):
        add_provider(emulator, slug, [keys.get(slug, "ok")], ["llama"])
    add_provider(emulator, "judge", [judge_key], ["big"])
    chain = add_chain("panel", ["alpha/llama", "beta/llama", "gamma/llama"])
    chain.strategy, chain.fusion = "fusion", fusion
    chain.save()


def _ask(gw, content: str = "hi there"):
    resp = httpx.post(f"{gw.base_url}/chat/completions", timeout=30, headers={"Authorization": f"Bearer {gw.api_key}"},
                      json={"model": "panel", "messages": [{"role": "user", "content": content}]})
    assert resp.status_code == 200, resp.text
    return resp


def _calls(emulator, provider: str):
    return emulator.calls_for(provider=provider, path="/chat/completions")


def test_the_panel_answers_and_the_judge_writes_from_their_drafts(gateway, emulator):
    from routing.fusion import JUDGE_PROMPT

    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big", "mode": "judge"})
    resp = _ask(gateway)
    for member in ("alpha", "beta", "gamma"):
        assert len(_calls(emulator, member)) == 1
    (judged,) = _calls(emulator, "judge")
    system, prompt = judged.body["messages"]
    assert system == {"role": "system", "content": JUDGE_PROMPT}
    assert "user: hi there" in prompt["content"]
    assert [f"Draft {n}:" in prompt["content"] for n in (1, 2, 3)] == [True] * 3
    assert prompt["content"].count("Echo: hi there") == 3  # each member's draft

    answer = resp.json()
    # The emulator echoes the judge's prompt: the answer is the judge's.
    assert answer["choices"][0]["message"]["content"].startswith("Echo: Conversation:")
    assert [(p["model"], p["ok"]) for p in answer["freellm_panel"]] == [
        ("alpha/llama", True), ("beta/llama", True), ("gamma/llama", True)]
    assert resp.headers["X-FreeLLM-Provider"] == "judge"
    assert resp.headers["X-FreeLLM-Attempts"] == "4"
    trail = resp.headers["X-FreeLLM-Trail"]
    assert [route in trail for route in ("alpha/llama", "beta/llama", "gamma/llama", "judge/big")] == [True] * 4
    assert resp.headers["X-FreeLLM-Strategy"] == "fusion"


def test_quota_is_charged_for_every_call(gateway, emulator):
    from providers.models import UpstreamModel

    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big"})
    # One request a day for beta: the first fused request spends it, the second cannot ask beta again.
    UpstreamModel.objects.filter(provider__slug="beta").update(rpd=1)
    from routing.config import bump_config_version

    bump_config_version()
    _ask(gateway)
    second = _ask(gateway, "again")
    assert len(_calls(emulator, "beta")) == 1
    panel = {p["model"]: p["ok"] for p in second.json()["freellm_panel"]}
    assert panel == {"alpha/llama": True, "beta/llama": False, "gamma/llama": True}
    assert "beta/llama/beta-0 -> skipped:rpd" in second.headers["X-FreeLLM-Trail"]


def test_a_failing_member_leaves_its_draft_out(gateway, emulator):
    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big"}, keys={"beta": "x;500"})
    resp = _ask(gateway)
    (judged,) = _calls(emulator, "judge")
    prompt = judged.body["messages"][1]["content"]
    assert "Draft 2:" in prompt and "Draft 3:" not in prompt
    panel = resp.json()["freellm_panel"]
    assert [p["ok"] for p in panel] == [True, False, True]
    assert "error" in panel[1]


def test_a_failing_judge_leaves_the_consensus_draft(gateway, emulator):
    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big"}, judge_key="x;503")
    resp = _ask(gateway)
    assert resp.json()["choices"][0]["message"]["content"] == "Echo: hi there"
    assert len(_calls(emulator, "judge")) == 1


def test_best_of_without_a_judge_returns_a_draft_of_a_panel_of_distinct_providers(gateway, emulator):
    from providers.models import ChainEntry, UpstreamModel

    _fusion_chain(emulator, {"panel": 2, "mode": "best_of"})
    # A second model of alpha's: the panel takes one member per provider.
    second = UpstreamModel.objects.create(provider=UpstreamModel.objects.get(model_id="llama",
                                                                             provider__slug="alpha").provider,
                                          model_id="other")
    ChainEntry.objects.create(chain_id=ChainEntry.objects.first().chain_id, model=second, position=0)
    resp = _ask(gateway)
    assert resp.json()["choices"][0]["message"]["content"] == "Echo: hi there"
    called = sorted(c.provider for c in emulator.calls)
    assert called == ["alpha", "beta"]
    assert len(resp.json()["freellm_panel"]) == 2


def test_best_of_with_a_judge_lets_it_pick(gateway, emulator):
    from routing.fusion import PICK_PROMPT

    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big", "mode": "best_of"})
    resp = _ask(gateway)
    (judged,) = _calls(emulator, "judge")
    assert judged.body["messages"][0]["content"] == PICK_PROMPT
    assert resp.json()["choices"][0]["message"]["content"] == "Echo: hi there"  # a draft, as it came
    assert resp.headers["X-FreeLLM-Attempts"] == "4"


def test_a_stream_streams_the_judge(gateway, emulator):
    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big"})
    stream = gateway.openai().chat.completions.create(model="panel", stream=True,
                                                      messages=[{"role": "user", "content": "hi there"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("Echo: Conversation:") and "Draft 3:" in text
    (judged,) = _calls(emulator, "judge")
    assert judged.stream
    assert all(len(_calls(emulator, m)) == 1 for m in ("alpha", "beta", "gamma"))
    wait_until_idle()


def test_requests_with_tools_walk_the_chain_instead(gateway, emulator):
    from providers.models import UpstreamModel

    _fusion_chain(emulator, {"panel": 3, "judge": "judge/big"})
    UpstreamModel.objects.update(supports_tools=True)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    resp = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.api_key}"},
                      json={"model": "panel", "tools": [tool], "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    assert [c.provider for c in emulator.calls] == ["alpha"]


@pytest.mark.parametrize(("fusion", "problem"), [
    ({"panel": 3, "mode": "judge"}, "mode judge needs a judge"),
    ({"panel": 1, "mode": "best_of"}, "panel"),
    ({"panel": 3, "judge": "nobody/none"}, "fusion.judge: unknown model"),
])
def test_the_config_file_checks_fusion(db, fusion, problem):
    from providers.config_schema import ConfigError
    from providers.services import config_import

    data = {"providers": [{"name": "alpha", "base_url": "http://x/v1", "keys": [{"label": "k", "secret": "s"}],
                           "models": [{"id": "llama"}]}],
            "chains": [{"name": "panel", "strategy": "fusion", "fusion": fusion, "models": ["alpha/llama"]}]}
    with pytest.raises(ConfigError) as raised:
        config_import(data=data)
    assert problem in str(raised.value)


def test_fusion_and_cache_fields_round_trip_through_the_config_file(db):
    from providers.models import FallbackChain
    from providers.services import config_export, config_import

    chain = {"name": "panel", "kind": "chat", "strategy": "fusion", "cache_ttl": 300, "cache_shared": True,
             "fusion": {"panel": 2, "judge": "alpha/llama", "mode": "best_of"}, "models": ["alpha/llama"]}
    data = {"providers": [{"name": "alpha", "base_url": "http://x/v1", "keys": [{"label": "k", "secret": "s"}],
                           "models": [{"id": "llama"}]}], "chains": [chain]}
    config_import(data=data)
    stored = FallbackChain.objects.get(name="panel")
    assert (stored.cache_ttl, stored.cache_shared, stored.fusion["panel"]) == (300, True, 2)
    assert config_export()["chains"] == [chain]


def test_a_stream_of_best_of_replays_the_chosen_draft(gateway, emulator):
    _fusion_chain(emulator, {"panel": 2, "mode": "best_of"})
    stream = gateway.openai().chat.completions.create(model="panel", stream=True,
                                                      messages=[{"role": "user", "content": "hi there"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hi there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert sorted(c.provider for c in emulator.calls) == ["alpha", "beta"]
    wait_until_idle()
