"""Provider keys' last use is stamped in batches off the request path, not one UPDATE per request."""

from __future__ import annotations

import pytest

from routing import router
from tests.polling import wait_until_async


@pytest.mark.django_db(transaction=True)
async def test_keys_used_together_are_stamped_by_one_write(monkeypatch):
    from freellm.background import background_idle
    from providers.models import Provider, ProviderKey

    provider = await Provider.objects.acreate(slug="groq", name="groq", base_url="http://127.0.0.1:1/v1")
    keys = [await ProviderKey.objects.acreate(provider=provider, label=f"k{i}", secret="s") for i in range(3)]
    writes = []
    real = router._touch_flush

    async def counted():
        writes.append(sorted(router._touch_pending))
        await real()

    monkeypatch.setattr(router, "_touch_flush", counted)
    monkeypatch.setattr(router, "_touch_due", 0.0)
    monkeypatch.setattr(router, "_touch_pending", set())  # not the keys earlier tests used
    for key in keys:
        router._touch_key(key.id)
    await wait_until_async(background_idle)
    assert writes == [[k.id for k in keys]]
    stamped = [k.last_used_at async for k in ProviderKey.objects.order_by("id")]
    assert all(stamped)
    # Within TOUCH_SECONDS the next use waits for the next write.
    router._touch_key(keys[0].id)
    await wait_until_async(background_idle)
    assert len(writes) == 1 and router._touch_pending == {keys[0].id}
