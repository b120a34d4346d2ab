"""Two gateway processes sharing Redis spend a key's quota exactly once between them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.fixtures_gateway import add_chain, add_provider

RPM = 5


def _max_in_any_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_two_processes_never_exceed_a_keys_rpm(gateway_processes, emulator, django_user_model):
    from routing.services import api_key_create

    # The emulator enforces the same limit the gateway is told, and records every call it gets.
    add_provider(emulator, "groq", [f"a;rpm={RPM}", f"b;rpm={RPM}"], [{"model_id": "llama", "rpm": RPM}])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])
    user = django_user_model.objects.create_user("bob")
    _, key = api_key_create(user=user, name="t")

    first, second = gateway_processes(2)
    total = 3 * RPM * 2  # three times what both groq keys together allow in a minute

    def ask(i: int) -> httpx.Response:
        gw = (first, second)[i % 2]
        return httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                          json={"model": "auto", "messages": [{"role": "user", "content": f"q{i}"}]})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(ask, range(total)))

    assert [r.status_code for r in responses] == [200] * total
    groq_calls = emulator.calls_for(provider="groq")
    for name in ("a", "b"):
        calls = [c for c in groq_calls if c.key_name == name]
        assert _max_in_any_window([c.time for c in calls]) <= RPM
    # Every groq key was used to its limit (no quota left unused), and never refused by the emulator.
    assert len(groq_calls) == 2 * RPM
    assert all(c.status == 200 for c in groq_calls)
    served_by = {r.headers["X-FreeLLM-Provider"] for r in responses}
    assert served_by == {"groq", "gemini"}
