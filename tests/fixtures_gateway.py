"""The gateway under test: freellm's ASGI app on a real socket, plus helpers to configure upstreams."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:PORT
    api_key: str  # a valid unified key

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def openai(self, **kwargs):
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def anthropic(self, **kwargs):
        """The anthropic SDK at the server root, as Claude Code's ANTHROPIC_BASE_URL; the unified key goes as
        x-api-key, or as `Authorization: Bearer` with ``auth_token=`` (ANTHROPIC_AUTH_TOKEN)."""
        import anthropic

        kwargs.setdefault("max_retries", 0)
        if "auth_token" not in kwargs:
            kwargs.setdefault("api_key", self.api_key)
        return anthropic.Anthropic(base_url=self.url, **kwargs)


@pytest.fixture(scope="session")
def _gateway_server():
    from freellm.asgi import application
    from tests.servers import ServerThread

    server = ServerThread(application).start()
    yield server
    server.stop()


@pytest.fixture
def gateway(_gateway_server, transactional_db, django_user_model):
    """A live gateway with a fresh routing config, fresh quota state and a unified key for `alice`."""
    from routing.config import bump_config_version, invalidate_local_config
    from routing.services import api_key_create

    reset_shared_state()
    invalidate_local_config()
    bump_config_version()
    user = django_user_model.objects.create_user("alice", password="x")
    _, raw = api_key_create(user=user, name="test")
    yield Gateway(_gateway_server.url, raw)
    wait_until_idle()


def wait_until_idle(timeout: float = 10.0) -> None:
    """Let the gateway finish settling and logging before the database is flushed under it."""
    import time

    from routing.api.exchange import background_idle
    from tests.polling import wait_until

    wait_until(background_idle, timeout=timeout)
    time.sleep(0.05)


def reset_shared_state() -> None:
    """Forget quota, health, sticky sessions and cached answers left by earlier tests, in process and in Redis."""
    from django.conf import settings

    from routing import router
    from routing.cache import reset_response_cache
    from routing.quota import set_quota_store
    from routing.sessions import reset_session_store
    from routing.stats import reset_stats_store

    set_quota_store(None)
    reset_response_cache()
    router.forget_headroom()
    router._client_failures.clear()  # the in-process count of a client's 5xx (without Redis)
    reset_session_store()
    reset_stats_store()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        # Ours, and what went through Django's cache (its keys are prefixed ":<version>:").
        keys = [*client.scan_iter("freellm:*", count=1000), *client.scan_iter(":*:freellm:*", count=1000)]
        if keys:
            client.delete(*keys)
    else:
        from django.core.cache import cache

        cache.clear()


def add_provider(emulator, slug: str, keys: list[str], models: list[dict | str], *, adapter: str = "openai",
                 path: str | None = None, **provider_fields):
    """Create a provider served by the emulator at `<emulator>/<slug>/v1` with the given keys and models."""
    from providers.models import Provider, ProviderKey, UpstreamModel

    provider = Provider.objects.create(
        slug=slug, name=slug, adapter=adapter, base_url=f"{emulator.url}/{path or slug + '/v1'}", **provider_fields
    )
    for i, secret in enumerate(keys):
        ProviderKey.objects.create(provider=provider, label=f"{slug}-{i}", secret=secret)
    for spec in models:
        spec = {"model_id": spec} if isinstance(spec, str) else dict(spec)
        UpstreamModel.objects.create(provider=provider, **spec)
    return provider


def add_chain(name: str, routes: list[str], kind: str = "chat"):
    """A chain over "provider/model_id" names, in order."""
    from providers.models import ChainEntry, FallbackChain, UpstreamModel

    chain = FallbackChain.objects.create(name=name, kind=kind)
    for pos, route in enumerate(routes):
        slug, model_id = route.split("/", 1)
        model = UpstreamModel.objects.get(provider__slug=slug, model_id=model_id)
        ChainEntry.objects.create(chain=chain, model=model, position=pos)
    return chain


def reorder_chain(name: str, routes: list[str]) -> None:
    """Change a chain's order through the ORM, as the admin does (the save bumps the config version)."""
    from providers.models import ChainEntry

    for position, route in enumerate(routes):
        slug, model_id = route.split("/", 1)
        entry = ChainEntry.objects.get(chain__name=name, model__provider__slug=slug, model__model_id=model_id)
        entry.position = position
        entry.save()


# Native providers behind the live gateway (Gemini, Cohere, Workers AI), shared by the api tests.
ACCOUNT = "0123456789abcdef0123456789abcdef"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def add_native(emulator, kind: str, key: str, slug: str | None = None) -> str:
    """One native provider served by the emulator; returns its route name."""
    slug = slug or kind
    if kind == "gemini":
        models = ["gemini-2.5-flash", {"model_id": "gemini-3-flash-preview", "supports_tools": True}]
        add_provider(emulator, slug, [key], models, adapter="gemini", path=f"{slug}/v1beta")
        return f"{slug}/gemini-2.5-flash"
    if kind == "cohere":
        add_provider(emulator, slug, [key], ["command-a-03-2025"], adapter="cohere", path=f"{slug}/v2")
        return f"{slug}/command-a-03-2025"
    add_provider(emulator, slug, [f"{ACCOUNT}:{key}"], ["@cf/meta/llama-3.3-70b-instruct-fp8-fast"],
                 adapter="cloudflare", path=f"{slug}/client/v4")
    return f"{slug}/@cf/meta/llama-3.3-70b-instruct-fp8-fast"


KINDS = ["openai", "gemini", "cohere", "cloudflare"]
CAPABLE = {"supports_tools": True, "supports_json": True}


def capable_route(emulator, kind: str) -> str:
    """A provider of the given wire format whose model takes tools and JSON output; returns its route name."""
    if kind == "openai":
        add_provider(emulator, "groq", ["ok"], [{"model_id": "llama", **CAPABLE}])
        return "groq/llama"
    if kind == "gemini":
        add_provider(emulator, "gemini", ["ok"], [{"model_id": "gemini-2.5-flash", **CAPABLE}], adapter="gemini",
                     path="gemini/v1beta")
        return "gemini/gemini-2.5-flash"
    if kind == "cohere":
        add_provider(emulator, "cohere", ["ok"], [{"model_id": "command-a-03-2025", **CAPABLE}], adapter="cohere",
                     path="cohere/v2")
        return "cohere/command-a-03-2025"
    model = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    add_provider(emulator, "cloudflare", [f"{ACCOUNT}:ok"], [{"model_id": model, **CAPABLE}], adapter="cloudflare",
                 path="cloudflare/client/v4")
    return f"cloudflare/{model}"
