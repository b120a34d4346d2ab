"""The provider catalog: what the gateway knows about each free tier, one YAML file per provider.

The files beside this module are data checked into the repo (base URL, adapter, auth style, free models
and their documented limits, each with the date it was checked). This module loads and validates them;
writes to the database live in ``providers.services_catalog``.

An entry is an import spec (``ProviderSpec`` / ``ModelSpec`` of ``import_config``) plus catalog-only
metadata (auth style, docs and signup links, the date checked, a model's ``auto_rank``), so a provider and
a model are described, validated and written to the database by one set of classes. Two field names differ
from the import file on purpose and stay as shipped: ``slug`` (import: ``name``) and ``name`` (import:
``display_name``); in code both read ``entry.slug`` / ``entry.name`` as the Provider model does.

``canonical`` (a model field) is the cross-provider id of a model served by more than one provider, so
a request for it can go to any of them. One scheme everywhere: lowercase, no vendor or host prefix, no
quantisation or speed suffix (fp8, -fast, -turbo, :free), dots kept in versions, the parameter count as
the model card spells it, and ``-instruct`` for instruction-tuned models whose base model also exists:
``llama-3.3-70b-instruct``, ``llama-3.1-8b-instruct``, ``gpt-oss-120b``, ``qwen3-32b``,
``qwen3-coder-480b-a35b-instruct``, ``deepseek-v3.1``, ``bge-m3``, ``whisper-large-v3-turbo``. A model
only one provider serves has none; versions that differ (mistral-small 3.1 vs 3.2) get none either.

Recognisers for bulk key import: ``key_env`` (the variable names a ``.env`` uses for the key),
``key_prefix`` (prefixes only this provider's keys start with) and ``key_account_env`` (Cloudflare's
account id). A name or prefix claimed by two providers, or a prefix that starts another provider's, is a
catalog error: the import never guesses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config_schema import AdapterName, ModelSpec, NonNegativeInt, ProviderSpec, validation_problems

CATALOG_DIR = Path(__file__).resolve().parent

AuthStyle = Literal["bearer", "x-goog-api-key", "cloudflare-account-token", "apikey-header", "none"]
# How each adapter presents the key; a keyless provider may also say "none".
ADAPTER_AUTH: dict[str, str] = {
    "openai": "bearer",
    "gemini": "x-goog-api-key",
    "cohere": "bearer",
    "cloudflare": "cloudflare-account-token",
    "aihorde": "apikey-header",
}
# Environment variable names and key prefixes recognise a pasted key's provider (bulk key import).
ENV_NAME = r"^[A-Z][A-Z0-9_]*$"

PositiveInt = Annotated[int, Field(gt=0)]
_FROZEN = ConfigDict(frozen=True)


class CatalogError(ValueError):
    """A catalog file is missing, unreadable or invalid; the message names the file and the field."""


class CatalogModel(ModelSpec):
    model_config = _FROZEN

    # Stricter than an import file: a documented size is never 0.
    dimensions: PositiveInt | None = None
    context_window: PositiveInt | None = None
    # Position in the default `auto` chain across all providers; lower comes first. Only chat models.
    auto_rank: NonNegativeInt | None = None

    # Import-file fields a catalog file must not set (runs only when the file gives one).
    @field_validator("enabled", mode="before")
    @classmethod
    def _not_in_catalog(cls, value: Any) -> Any:
        raise ValueError("not a catalog field (an admin enables and disables models)")

    @model_validator(mode="after")
    def _kind_rules(self) -> CatalogModel:
        if self.kind == "embedding":
            if not self.family:
                raise ValueError("embedding models need a family (vectors are only comparable within one)")
            if self.dimensions is None:
                raise ValueError("embedding models need dimensions")
        elif self.dimensions is not None:
            raise ValueError("dimensions only apply to embedding models")
        if self.auto_rank is not None and self.kind != "chat":
            raise ValueError("auto_rank only applies to chat models")
        return self


class CatalogProvider(ProviderSpec):
    model_config = _FROZEN

    slug: str = Field(alias="slug", pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    name: str = Field(alias="name", min_length=1, max_length=120)
    adapter: AdapterName
    models: list[CatalogModel] = Field(min_length=1)
    auth: AuthStyle
    docs_url: str
    checked: date
    signup_url: str = ""
    notes: str = ""
    # Recognisers for bulk key import: the variable names a .env uses for this provider's key, and the
    # prefixes only its keys start with (e.g. gsk_). A prefix must belong to one provider only.
    key_env: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(default_factory=list)
    key_prefix: list[Annotated[str, Field(min_length=3)]] = Field(default_factory=list)
    # Where the account id lives in a .env, for keys pasted as account_id:token (Cloudflare).
    key_account_env: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(default_factory=list)

    # Import-file fields a catalog file must not set (runs only when the file gives one).
    @field_validator("keys", "enabled", "proxy", mode="before")
    @classmethod
    def _not_in_catalog(cls, value: Any) -> Any:
        raise ValueError("not a catalog field (keys and proxies are set in the admin, which also enables providers)")

    @field_validator("docs_url", "signup_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value == "":
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CatalogProvider:
        expected = ADAPTER_AUTH[self.adapter]
        if self.auth == "none" and not self.keyless:
            raise ValueError("auth 'none' needs keyless: true")
        if self.auth not in (expected, "none"):
            raise ValueError(f"the {self.adapter} adapter authenticates with {expected!r}, not {self.auth!r}")
        if self.key_account_env and self.auth != "cloudflare-account-token":
            raise ValueError("key_account_env only applies to account_id:token keys (cloudflare-account-token)")
        seen: set[str] = set()
        for model in self.models:
            if model.id in seen:
                raise ValueError(f"model {model.id!r} is listed twice")
            seen.add(model.id)
        return self

    @property
    def chat_models(self) -> list[CatalogModel]:
        return [m for m in self.models if m.kind == "chat"]

    def model(self, model_id: str) -> CatalogModel | None:
        return next((m for m in self.models if m.id == model_id), None)


def load_provider_file(path: Path) -> CatalogProvider:
    """Parse and validate one catalog file; the slug must match the file name."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path.name}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{path.name}: expected a mapping of provider fields at the top level")
    try:
        provider = CatalogProvider.model_validate(data)
    except ValidationError as exc:
        raise CatalogError("\n".join(f"{path.name}: {line}" for line in validation_problems(exc, CatalogProvider))) from exc
    if provider.slug != path.stem:
        raise CatalogError(f"{path.name}: slug: {provider.slug!r} must match the file name {path.stem!r}")
    return provider


def load_catalog(directory: Path = CATALOG_DIR) -> dict[str, CatalogProvider]:
    """Every provider in ``directory`` keyed by slug; all files are checked and all errors reported."""
    providers: dict[str, CatalogProvider] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            provider = load_provider_file(path)
        except CatalogError as exc:
            errors.append(str(exc))
            continue
        providers[provider.slug] = provider
    errors.extend(_recogniser_clashes(providers.values()))
    if errors:
        raise CatalogError("invalid provider catalog:\n" + "\n".join(errors))
    return providers


def _recogniser_clashes(providers: Iterable[CatalogProvider]) -> list[str]:
    """A variable name or key prefix claimed by two providers would make bulk import guess: refuse it."""
    owners: dict[tuple[str, str], str] = {}
    problems = []
    for provider in providers:
        for kind, values in (("key_env", provider.key_env), ("key_prefix", provider.key_prefix)):
            for value in values:
                other = owners.setdefault((kind, value), provider.slug)
                if other != provider.slug:
                    problems.append(f"{provider.slug}.yaml: {kind}: {value!r} is already {other}'s")
    prefixes = sorted({(v, s) for (k, v), s in owners.items() if k == "key_prefix"})
    for value, slug in prefixes:
        for other_value, other_slug in prefixes:
            if other_slug != slug and other_value != value and other_value.startswith(value):
                problems.append(f"{slug}.yaml: key_prefix: {value!r} is also the start of {other_slug}'s {other_value!r}")
    return problems


@functools.cache
def _default_catalog() -> dict[str, CatalogProvider]:
    return load_catalog(CATALOG_DIR)


def catalog_providers() -> list[CatalogProvider]:
    """The shipped catalog, sorted by slug (loaded once per process)."""
    return sorted(_default_catalog().values(), key=lambda p: p.slug)


def catalog_provider(slug: str) -> CatalogProvider:
    try:
        return _default_catalog()[slug]
    except KeyError:
        raise CatalogError(f"no provider {slug!r} in the catalog") from None
