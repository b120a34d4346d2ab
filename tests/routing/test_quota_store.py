"""The quota store contract, run on both backends (in-process and Redis) on a test clock."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from providers.adapters.base import ErrorKind
from routing.quota.base import Denied, HealthState, Lease, Limits, Route
from tests.fixtures_quota import LEASE_TTL


def route(model: str = "llama", key: str = "k1", provider: str = "groq", **limits) -> Route:
    provider_limits = {k[2:]: v for k, v in limits.items() if k.startswith("p_")}
    own = {k: v for k, v in limits.items() if not k.startswith("p_") and k != "tz"}
    return Route(provider, model, key, Limits(**own), Limits(**provider_limits), limits.get("tz", "UTC"))


async def take(store, r: Route, n: int, tokens: int = 0) -> list[Lease | Denied]:
    return [await store.reserve(r, tokens) for _ in range(n)]


def leases(results) -> list[Lease]:
    return [x for x in results if isinstance(x, Lease)]


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- windows ---------------------------------------------------------------------------------------


async def test_rpm_enforced_and_reopens_after_the_window(quota_store, clock):
    r = route(rpm=3)
    assert len(leases(await take(quota_store, r, 3))) == 3
    denied = await quota_store.reserve(r, 0)
    assert isinstance(denied, Denied) and denied.reason == "rpm"
    assert 60 <= denied.retry_after <= 61
    clock.advance(denied.retry_after)
    assert isinstance(await quota_store.reserve(r, 0), Lease)


async def test_rpd_tpm_tpd_enforced(quota_store, clock):
    r = route(rpd=2)
    await take(quota_store, r, 2)
    clock.advance(120)
    denied = await quota_store.reserve(r, 0)
    assert isinstance(denied, Denied) and denied.reason == "rpd"
    # 10:02 UTC: the day window reopens at midnight.
    assert denied.retry_after == pytest.approx(14 * 3600 - 120.5, abs=1)

    r = route("tok", tpm=1000, tpd=1500)
    assert isinstance(await quota_store.reserve(r, 700), Lease)
    denied = await quota_store.reserve(r, 400)
    assert isinstance(denied, Denied) and denied.reason == "tpm"
    assert isinstance(await quota_store.reserve(r, 300), Lease)
    clock.advance(61)
    denied = await quota_store.reserve(r, 600)
    assert isinstance(denied, Denied) and denied.reason == "tpd"
    assert isinstance(await quota_store.reserve(r, 500), Lease)
    # A request bigger than the whole minute window never fits here.
    big = await quota_store.reserve(route("other", tpm=1000), 5000)
    assert isinstance(big, Denied) and big.reason == "tpm"


async def test_a_burst_at_a_minutes_edge_cannot_double_the_limit(quota_store, clock):
    r = route(rpm=5)
    clock.set(datetime(2026, 11, 24, 10, 0, 59, 900000, tzinfo=UTC))
    assert len(leases(await take(quota_store, r, 5))) == 5
    # 0.2 s later a new calendar minute has begun; a fixed-minute counter would take 5 more.
    clock.advance(0.2)
    assert leases(await take(quota_store, r, 5)) == []


async def test_no_sixty_second_interval_ever_exceeds_the_limit(quota_store, clock):
    """Random traffic over ten minutes: count what passed in every real 60-second interval."""
    rng = random.Random(7)
    r = route(rpm=7)
    passed: list[float] = []
    for _ in range(600):
        clock.advance(rng.uniform(0.05, 2.0))
        for _ in range(rng.randint(0, 3)):
            if isinstance(await quota_store.reserve(r, 0), Lease):
                passed.append(clock())
    assert max_in_any_window(passed) == 7
    # Never more than a second conservative: the limit is reached in most minutes.
    assert len(passed) >= 7 * 8


async def test_concurrent_reserves_never_overshoot(quota_store):
    r = route(rpm=10, tpm=5000)
    results = await asyncio.gather(*(quota_store.reserve(r, 400) for _ in range(50)))
    got = leases(results)
    # 12 x 400 tokens would fit the TPM but only 10 requests the RPM.
    assert len(got) == 10
    status = await quota_store.status(r)
    assert status.used["rpm"] == 10 and status.used["tpm"] == 4000


async def test_two_redis_clients_racing_share_one_limit(redis_url, clock):
    """Two stores with their own connections stand in for two gateway processes."""
    from routing.quota.redis import RedisQuotaStore

    first, second = (RedisQuotaStore(redis_url, lease_ttl=LEASE_TTL, now=clock) for _ in range(2))
    r = route(rpm=10)
    results = await asyncio.gather(*(first.reserve(r, 10) for _ in range(40)),
                                   *(second.reserve(r, 10) for _ in range(40)))  # fmt: skip
    assert len(leases(results)) == 10
    # The provider-wide 15 RPM caps two models together, whoever asks.
    a, b = route("m1", p_rpm=15, rpm=10), route("m2", p_rpm=15, rpm=10)
    clock.advance(61)
    results = await asyncio.gather(*(first.reserve(a, 0) for _ in range(20)),
                                   *(second.reserve(b, 0) for _ in range(20)))  # fmt: skip
    got = leases(results)
    assert len(got) == 15
    assert all(len([x for x in got if x.route_id == m.id]) <= 10 for m in (a, b))
    await first.aclose()
    await second.aclose()


async def test_provider_wide_caps_span_keys_and_models(quota_store, clock):
    a = route("m1", "k1", p_rpm=3, p_rpd=4)
    b = route("m2", "k2", p_rpm=3, p_rpd=4)
    assert isinstance(await quota_store.reserve(a, 0), Lease)
    assert isinstance(await quota_store.reserve(b, 0), Lease)
    assert isinstance(await quota_store.reserve(a, 0), Lease)
    denied = await quota_store.reserve(b, 0)
    assert isinstance(denied, Denied) and denied.reason == "provider_rpm"
    # Another provider is not affected.
    assert isinstance(await quota_store.reserve(route("m1", "k1", provider="cerebras", p_rpm=3), 0), Lease)
    clock.advance(62)
    assert isinstance(await quota_store.reserve(b, 0), Lease)
    denied = await quota_store.reserve(a, 0)
    assert isinstance(denied, Denied) and denied.reason == "provider_rpd"
    assert (await quota_store.status(a)).used["provider_rpd"] == 4


async def test_daily_windows_reset_at_midnight_in_the_providers_zone(quota_store, clock):
    # 07:59:30 UTC is 23:59:30 in Los Angeles (PST, UTC-8) on 2026-11-23.
    clock.set(datetime(2026, 11, 24, 7, 59, 30, tzinfo=UTC))
    pacific = route("flash", provider="gemini", rpd=2, tz="America/Los_Angeles")
    utc = route("llama", rpd=2)
    await take(quota_store, pacific, 2)
    await take(quota_store, utc, 2)
    denied = await quota_store.reserve(pacific, 0)
    assert isinstance(denied, Denied) and denied.reason == "rpd"
    assert denied.retry_after == pytest.approx(30, abs=0.01)
    clock.advance(31)
    assert isinstance(await quota_store.reserve(pacific, 0), Lease)
    # The UTC day still has 16 hours to go.
    denied = await quota_store.reserve(utc, 0)
    assert isinstance(denied, Denied) and denied.reason == "rpd"
    assert denied.retry_after == pytest.approx(16 * 3600 - 1, abs=1)


# --- leases ------------------------------------------------------------------------------------------


async def test_settle_replaces_an_over_estimate(quota_store):
    r = route(tpm=1000, tpd=10_000)
    lease = await quota_store.reserve(r, 800)
    assert isinstance(lease, Lease) and lease.tokens == 800
    assert isinstance(await quota_store.reserve(r, 300), Denied)
    await quota_store.settle(lease, 120)
    assert isinstance(await quota_store.reserve(r, 300), Lease)
    status = await quota_store.status(r)
    assert status.used["tpm"] == 420 and status.used["tpd"] == 420 and status.used["rpm"] == 2
    # Settling twice changes nothing.
    await quota_store.settle(lease, 0)
    assert (await quota_store.status(r)).used["tpm"] == 420


async def test_settle_charges_an_under_estimate(quota_store):
    r = route(tpm=1000)
    lease = await quota_store.reserve(r, 100)
    await quota_store.settle(lease, 900)
    assert (await quota_store.status(r)).used["tpm"] == 900
    assert isinstance(await quota_store.reserve(r, 200), Denied)


async def test_release_gives_the_request_back(quota_store):
    r = route(rpm=1, tpm=500, p_rpm=1)
    lease = await quota_store.reserve(r, 400)
    assert isinstance(await quota_store.reserve(r, 0), Denied)
    await quota_store.release(lease)
    status = await quota_store.status(r)
    assert status.used["rpm"] == 0 and status.used["tpm"] == 0 and status.used["provider_rpm"] == 0
    assert isinstance(await quota_store.reserve(r, 400), Lease)


async def test_a_killed_requests_lease_expires(quota_store, clock):
    """A process dies mid-request: no settle, no record. Nothing stays stuck beyond the windows/TTL."""
    r = route(tpm=1000, tpd=5000)
    await quota_store.record(r, ErrorKind.RATE_LIMITED, retry_after=10)
    clock.advance(11)
    trial = await quota_store.reserve(r, 900)
    assert isinstance(trial, Lease)
    assert trial.expires_at == pytest.approx(clock() + LEASE_TTL)
    # ...the process holding the trial is killed here. Its trial slot blocks others until the lease expires.
    clock.advance(LEASE_TTL - 1)
    denied = await quota_store.reserve(r, 10)
    assert isinstance(denied, Denied) and denied.reason == "half_open"
    assert denied.retry_after == pytest.approx(1, abs=0.01)
    clock.advance(1.5)
    second_trial = await quota_store.reserve(r, 900)
    assert isinstance(second_trial, Lease)
    # The dead request's estimate left the minute window long ago but is still charged for the day.
    status = await quota_store.status(r)
    assert status.used["tpm"] == 900 and status.used["tpd"] == 1800
    # A settle that comes very late (the request was slow, not dead) still corrects the day.
    await quota_store.settle(trial, 100)
    assert (await quota_store.status(r)).used["tpd"] == 1000


# --- health ------------------------------------------------------------------------------------------


async def test_retry_after_is_honoured(quota_store, clock):
    r = route()
    await quota_store.record(r, ErrorKind.RATE_LIMITED, headers={"Retry-After": "30"})
    denied = await quota_store.reserve(r, 0)
    assert isinstance(denied, Denied) and denied.reason == "cooldown"
    assert denied.retry_after == pytest.approx(30)
    assert await quota_store.headroom(r) == 0.0
    status = await quota_store.status(r)
    assert status.health == HealthState.OPEN and status.cooldown_until == pytest.approx(clock() + 30)
    clock.advance(29.9)
    assert isinstance(await quota_store.reserve(r, 0), Denied)
    clock.advance(0.2)
    assert (await quota_store.status(r)).health == HealthState.HALF_OPEN
    assert isinstance(await quota_store.reserve(r, 0), Lease)
    await quota_store.record(r, None)
    assert (await quota_store.status(r)).health == HealthState.CLOSED
    assert len(leases(await take(quota_store, r, 3))) == 3


async def test_rate_limit_without_hints(quota_store, clock):
    r = route(rpd=3)
    await quota_store.record(r, ErrorKind.RATE_LIMITED)
    assert (await quota_store.reserve(r, 0)).retry_after == pytest.approx(60)
    # When our own counters show the day used up, a bare 429 means: until midnight.
    clock.advance(61)
    await quota_store.record(r, None)
    await take(quota_store, r, 3)
    await quota_store.record(r, ErrorKind.RATE_LIMITED, retry_after=None)
    denied = await quota_store.reserve(r, 0)
    assert denied.reason == "cooldown" and denied.retry_after == pytest.approx(14 * 3600 - 61.5, abs=1)


async def test_server_errors_escalate_and_a_success_resets(quota_store, clock):
    r = route()
    await quota_store.record(r, ErrorKind.SERVER)
    # One error is not yet "repeated".
    assert isinstance(await quota_store.reserve(r, 0), Lease)
    await quota_store.record(r, ErrorKind.TIMEOUT)
    for cooldown, error in ((30, None), (120, ErrorKind.CONNECTION), (600, ErrorKind.SERVER),
                            (3600, ErrorKind.TIMEOUT), (3600, ErrorKind.SERVER)):  # fmt: skip
        denied = await quota_store.reserve(r, 0)
        assert isinstance(denied, Denied) and denied.reason == "cooldown"
        assert denied.retry_after == pytest.approx(cooldown), cooldown
        clock.advance(cooldown)
        trial = await quota_store.reserve(r, 0)
        assert isinstance(trial, Lease)
        await quota_store.record(r, error or ErrorKind.SERVER)
    status = await quota_store.status(r)
    assert status.health == HealthState.OPEN and status.failures == 7
    clock.advance(3600)
    assert isinstance(await quota_store.reserve(r, 0), Lease)
    await quota_store.record(r, None)
    status = await quota_store.status(r)
    assert status.health == HealthState.CLOSED and status.failures == 0
    # The ladder starts again from the bottom.
    await quota_store.record(r, ErrorKind.SERVER)
    await quota_store.record(r, ErrorKind.SERVER)
    assert (await quota_store.reserve(r, 0)).retry_after == pytest.approx(30)


async def test_failures_of_requests_already_in_flight_do_not_escalate(quota_store, clock):
    r = route()
    await quota_store.record(r, ErrorKind.SERVER)
    await quota_store.record(r, ErrorKind.SERVER)
    # Three more in-flight requests fail while the route is already cooling down.
    for _ in range(3):
        await quota_store.record(r, ErrorKind.TIMEOUT)
    assert (await quota_store.reserve(r, 0)).retry_after == pytest.approx(30)


async def test_half_open_lets_exactly_one_trial_through(quota_store, clock):
    r = route()
    await quota_store.record(r, ErrorKind.RATE_LIMITED, retry_after=5)
    clock.advance(5)
    results = await asyncio.gather(*(quota_store.reserve(r, 0) for _ in range(20)))
    got = leases(results)
    assert len(got) == 1
    assert {d.reason for d in results if isinstance(d, Denied)} == {"half_open"}
    # The trial never reached the provider: the slot goes to the next request.
    await quota_store.release(got[0])
    retry = await quota_store.reserve(r, 0)
    assert isinstance(retry, Lease)
    assert isinstance(await quota_store.reserve(r, 0), Denied)
    # The trial fails: open again (429 → its own cooldown), no trial slot held.
    await quota_store.record(r, ErrorKind.RATE_LIMITED, retry_after=7)
    denied = await quota_store.reserve(r, 0)
    assert denied.reason == "cooldown" and denied.retry_after == pytest.approx(7)


async def test_auth_failure_disables_the_key_for_all_its_models(quota_store, clock):
    bad_m1, bad_m2 = route("m1", "k1"), route("m2", "k1")
    good = route("m1", "k2")
    await quota_store.record(bad_m1, ErrorKind.AUTH, message="Invalid API Key")
    for r in (bad_m1, bad_m2):
        denied = await quota_store.reserve(r, 0)
        assert isinstance(denied, Denied) and denied.reason == "key_invalid"
        status = await quota_store.status(r)
        assert status.key_invalid and status.health == HealthState.KEY_INVALID
        assert await quota_store.headroom(r) == 0.0
    assert isinstance(await quota_store.reserve(good, 0), Lease)
    # Time alone does not bring it back...
    clock.advance(86400 * 3)
    assert (await quota_store.reserve(bad_m2, 0)).reason == "key_invalid"
    # ...an admin does (or a probe that succeeds: record(route, None)).
    await quota_store.clear_cooldown(bad_m2)
    assert isinstance(await quota_store.reserve(bad_m1, 0), Lease)
    await quota_store.record(bad_m1, ErrorKind.AUTH)
    await quota_store.record(bad_m2, None)
    assert isinstance(await quota_store.reserve(bad_m1, 0), Lease)


async def test_clear_cooldown(quota_store, clock):
    r = route()
    await quota_store.record(r, ErrorKind.SERVER)
    await quota_store.record(r, ErrorKind.SERVER)
    await quota_store.record(r, ErrorKind.RATE_LIMITED, headers={"x-ratelimit-remaining-requests": "0",
                                                                 "x-ratelimit-reset-requests": "50s"})
    assert isinstance(await quota_store.reserve(r, 0), Denied)
    await quota_store.clear_cooldown(r)
    status = await quota_store.status(r)
    assert status.health == HealthState.CLOSED and status.failures == 0 and status.exhausted_until is None
    assert isinstance(await quota_store.reserve(r, 0), Lease)


# --- learning ----------------------------------------------------------------------------------------


async def test_groq_headers_teach_limits_and_usage(quota_store, clock):
    r = route(rpm=30, tpm=12_000)
    groq = {
        "x-ratelimit-limit-requests": "1000",  # Groq: per day
        "x-ratelimit-limit-tokens": "6000",  # Groq: per minute
        "x-ratelimit-remaining-requests": "995",
        "x-ratelimit-remaining-tokens": "2000",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    await quota_store.record(r, None, headers=groq)
    status = await quota_store.status(r)
    assert status.learned == {"rpd": 1000, "tpm": 6000}
    assert status.limits == {"rpm": 30, "rpd": 1000, "tpm": 6000, "tpd": None}
    # The provider has seen 4000 tokens we never sent this minute: someone else uses this key too.
    assert status.used["tpm"] == 4000
    # Groq refills its day window continuously (full again in 3 minutes): no floor on our calendar day.
    assert status.used["rpd"] == 0
    assert isinstance(await quota_store.reserve(r, 2500), Denied)
    assert isinstance(await quota_store.reserve(r, 2000), Lease)


async def test_an_empty_window_in_headers_shuts_the_route_until_it_resets(quota_store, clock):
    r = route(rpm=30)
    await quota_store.record(r, None, headers={"x-ratelimit-limit-requests": "1000",
                                               "x-ratelimit-remaining-requests": "0",
                                               "x-ratelimit-reset-requests": "2m59.56s"})  # fmt: skip
    denied = await quota_store.reserve(r, 0)
    assert isinstance(denied, Denied) and denied.reason == "rpd"
    assert denied.retry_after == pytest.approx(179.56)
    clock.advance(180)
    assert isinstance(await quota_store.reserve(r, 0), Lease)


async def test_openai_style_headers_learn_a_tighter_rpm(quota_store):
    r = route(rpm=600)
    await quota_store.record(r, None, headers={"x-ratelimit-limit-requests": "3",
                                               "x-ratelimit-remaining-requests": "3",
                                               "x-ratelimit-reset-requests": "120ms"})  # fmt: skip
    assert (await quota_store.status(r)).learned == {"rpm": 3}
    assert len(leases(await take(quota_store, r, 5))) == 3


async def test_explicit_window_headers(quota_store):
    r = route(rpd=5000)
    await quota_store.record(r, None, headers={"x-ratelimit-limit-requests-day": "14400",
                                               "x-ratelimit-remaining-requests-day": "14398",
                                               "x-ratelimit-limit-tokens-minute": "60000"})  # fmt: skip
    status = await quota_store.status(r)
    assert status.learned == {"rpd": 14400, "tpm": 60000}
    assert status.limits["rpd"] == 5000  # configured is tighter: kept
    assert status.used["rpd"] == 2


async def test_groq_error_text_teaches_the_limit_and_marks_the_window(quota_store, clock):
    r = route("llama-3.3-70b-versatile", tpd=500_000)
    message = (
        "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_x` service tier "
        "`on_demand` on tokens per day (TPD): Limit 100000, Used 99500, Requested 1200. "
        "Please try again in 7m12.5s. Need more tokens? Upgrade to Dev Tier today"
    )
    await quota_store.record(r, ErrorKind.RATE_LIMITED, message=message)
    status = await quota_store.status(r)
    assert status.learned == {"tpd": 100000} and status.limits["tpd"] == 100000
    denied = await quota_store.reserve(r, 100)
    assert denied.reason == "cooldown" and denied.retry_after == pytest.approx(432.5)
    clock.advance(433)
    # Back (half-open), with the learned day limit.
    assert isinstance(await quota_store.reserve(r, 100_001), Denied)
    assert isinstance(await quota_store.reserve(r, 1000), Lease)


async def test_calendar_day_usage_reported_by_the_provider_is_charged(quota_store):
    """A window that resets at midnight (no shorter reset given): the provider's count is our floor."""
    r = route(rpd=20, tpd=10_000)
    await quota_store.record(r, ErrorKind.RATE_LIMITED, message="Limit 10000, Used 9800 on tokens per day (TPD)")
    status = await quota_store.status(r)
    assert status.used["tpd"] == 9800 and status.learned == {"tpd": 10000}
    await quota_store.clear_cooldown(r)
    assert isinstance(await quota_store.reserve(r, 300), Denied)
    assert isinstance(await quota_store.reserve(r, 200), Lease)


async def test_headroom_orders_keys(quota_store):
    fresh, used = route(key="a", rpm=10), route(key="b", rpm=10)
    await take(quota_store, used, 6)
    assert await quota_store.headroom(fresh) == 1.0
    assert await quota_store.headroom(used) == pytest.approx(0.4)
    assert await quota_store.headroom(route(key="c")) == 1.0


async def test_set_key_invalid_from_a_probe(quota_store):
    a, b = route("m1", "k1"), route("m2", "k1")
    await quota_store.set_key_invalid(a, True)
    assert (await quota_store.reserve(b, 0)).reason == "key_invalid"
    await quota_store.set_key_invalid(a, False)
    assert isinstance(await quota_store.reserve(b, 0), Lease)


async def test_embedded_store_forgets_an_auth_failure_after_its_ttl(clock):
    from routing.quota.local import LocalQuotaStore

    store = LocalQuotaStore(lease_ttl=LEASE_TTL, now=clock, key_invalid_ttl=600)
    r = route()
    await store.record(r, ErrorKind.AUTH)
    clock.advance(599)
    assert (await store.reserve(r, 0)).reason == "key_invalid"
    clock.advance(2)
    assert isinstance(await store.reserve(r, 0), Lease)


async def test_redis_keys_are_namespaced_and_expire(redis_url, clock):
    import redis.asyncio as aioredis

    from routing.quota.redis import PREFIX, RedisQuotaStore

    store = RedisQuotaStore(redis_url, lease_ttl=LEASE_TTL, now=clock)
    r = route(rpm=5, tpm=1000, p_rpm=10)
    lease = await store.reserve(r, 100)
    await store.reserve(r, 100)
    await store.settle(lease, 50)
    await store.record(r, ErrorKind.RATE_LIMITED, headers={"x-ratelimit-limit-tokens": "900"})
    await store.record(route(key="bad"), ErrorKind.AUTH)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = [k async for k in client.scan_iter("*")]
    assert keys and all(k.startswith(PREFIX) for k in keys)
    for key in keys:
        ttl = await client.ttl(key)
        # Only a disabled key's flag waits for an admin or a probe.
        assert (ttl == -1) if key.startswith(f"{PREFIX}k:") else (0 < ttl <= 7 * 86400), (key, ttl)
    await client.aclose()
    await store.aclose()


async def test_learning_from_a_real_upstreams_headers_and_429(quota_store, emulator, clock):
    """The emulator speaks Groq's wire format: headers on every answer, the 429 body text, Retry-After."""
    import httpx

    from providers.adapters import get_adapter
    from providers.adapters.base import Target, Timeouts, UpstreamError

    adapter = get_adapter("openai")
    target = Target(provider="groq", base_url=f"{emulator.url}/groq/v1", model="llama", api_key="a;rpm=2;tpm=5000")
    r = route(rpm=30)  # configured looser than the key really is
    request = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient() as client:
        answer = await adapter.chat(client, target, request, Timeouts())
        await quota_store.record(r, None, headers=answer.headers)
        status = await quota_store.status(r)
        assert status.learned == {"rpm": 2, "tpm": 5000} and status.limits["rpm"] == 2
        await adapter.chat(client, target, request, Timeouts())
        with pytest.raises(UpstreamError) as failure:
            await adapter.chat(client, target, request, Timeouts())
    exc = failure.value
    assert exc.kind == ErrorKind.RATE_LIMITED
    await quota_store.record(r, exc.kind, retry_after=exc.retry_after, headers=exc.headers, message=exc.message)
    denied = await quota_store.reserve(r, 0)
    assert denied.reason == "cooldown" and 50 < denied.retry_after <= 61
    # The provider counted two requests this minute that this store never reserved: they are ours now.
    assert (await quota_store.status(r)).used["rpm"] == 2


# --- many routes at once --------------------------------------------------------------------------------


async def test_headrooms_of_many_routes_match_each_routes_own(quota_store, clock):
    routes = [route(key=f"k{i}", rpm=10) for i in range(600)]  # more than one Redis pipeline batch
    for i, r in enumerate(routes[:5]):
        await take(quota_store, r, 2 * i)

    assert await quota_store.headrooms(routes) == [await quota_store.headroom(r) for r in routes]
    assert (await quota_store.headrooms(routes))[:5] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


async def test_scripts_the_server_forgot_are_loaded_again(redis_url, clock):
    import redis.asyncio as aioredis

    from routing.quota.redis import RedisQuotaStore

    store = RedisQuotaStore(redis_url, lease_ttl=LEASE_TTL, now=clock)
    r = route(rpm=5)
    lease = await store.reserve(r, 10)
    client = aioredis.Redis.from_url(redis_url)
    await client.script_flush()  # as a Redis restart does
    await client.aclose()

    await store.finish(lease, 7, r, None)  # settle + record, pipelined by SHA

    assert (await store.status(r)).used["tpm"] == 7
    assert await store.headrooms([r]) == [pytest.approx(0.8)]
    await store.aclose()
