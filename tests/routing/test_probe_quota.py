"""Health probes spend quota like any call (found by tests/soak_production.py: the first sweep probed keys the
traffic had already used up, so the upstream saw more calls than the key's rpm and answered 429)."""

from __future__ import annotations

import pytest

from providers.adapters.base import ErrorKind
from routing.quota.base import Lease, Limits, Route
from routing.quota.local import LocalQuotaStore
from tests.fixtures_gateway import add_provider
from tests.fixtures_quota import Clock


@pytest.fixture
def probe_env(settings, tmp_path):
    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path  # the embedded once-per-interval claim lives there


@pytest.mark.django_db(transaction=True)
def test_a_probe_never_calls_a_key_whose_minute_is_spent(emulator, probe_env):
    from providers.models import ProviderKey
    from routing.services_quota import provider_key_probe

    store = LocalQuotaStore(lease_ttl=60)
    add_provider(emulator, "groq", ["k;rpm=1"], [{"model_id": "llama", "rpm": 1}])
    key = ProviderKey.objects.get()
    route = Route("groq", "llama", key.label, Limits(rpm=1))
    assert isinstance(store.reserve_now(route, 10), Lease)  # the gateway's one call of this minute

    assert provider_key_probe(key_id=key.id, interval=0, store=store) is None

    assert emulator.calls_for(provider="groq") == []
    key.refresh_from_db()
    assert key.status == ProviderKey.Status.UNKNOWN  # untested still: a later sweep tries again


@pytest.mark.django_db(transaction=True)
def test_a_probe_waits_out_a_cooldown_and_is_the_half_open_trial(emulator, probe_env):
    from providers.models import ProviderKey
    from routing.services_quota import provider_key_probe

    clock = Clock(1_800_000_000.0)
    store = LocalQuotaStore(lease_ttl=60, now=clock)
    add_provider(emulator, "groq", ["k"], [{"model_id": "llama", "rpm": 30}])
    key = ProviderKey.objects.get()
    route = Route("groq", "llama", key.label, Limits(rpm=30))
    store.record_now(route, ErrorKind.SERVER)
    store.record_now(route, ErrorKind.SERVER)  # the circuit opens for 30 s

    assert provider_key_probe(key_id=key.id, interval=0, store=store) is None
    assert emulator.calls_for(provider="groq") == []

    clock.advance(31)  # half-open: one trial may go; the probe is it, and its success closes the circuit
    assert provider_key_probe(key_id=key.id, interval=0, store=store).ok is True
    assert len(emulator.calls_for(provider="groq")) == 1
    assert isinstance(store.reserve_now(route, 1), Lease)
    assert isinstance(store.reserve_now(route, 1), Lease)
    assert store.status_now(route).used["rpm"] == 3  # the probe's call is counted too


@pytest.mark.django_db(transaction=True)
def test_a_failed_trial_probe_opens_the_circuit_again(emulator, probe_env):
    from providers.models import ProviderKey
    from routing.services_quota import provider_key_probe

    clock = Clock(1_800_000_000.0)
    store = LocalQuotaStore(lease_ttl=60, now=clock)
    add_provider(emulator, "groq", ["k;503"], ["llama"])
    key = ProviderKey.objects.get()
    route = Route("groq", "llama", key.label)
    store.record_now(route, ErrorKind.SERVER)
    store.record_now(route, ErrorKind.SERVER)
    clock.advance(31)

    assert provider_key_probe(key_id=key.id, interval=0, store=store).ok is None  # inconclusive 503

    # Not left holding the trial slot until its lease expires: the circuit is open again, escalated.
    denied = store.reserve_now(route, 1)
    assert denied.reason == "cooldown" and denied.retry_after > 60
