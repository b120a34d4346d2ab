"""The provider catalog: what the gateway knows about each free tier, one YAML file per provider.

The files beside this module are data checked into the repo (base URL, adapter, auth style, free models
and their documented limits, each with the date it was checked). This module loads and validates them;
writes to the database live in ``providers.services_catalog``.

An entry is an import spec (``ProviderSpec`` / ``ModelSpec`` of ``import_config``) plus catalog-only
metadata (auth style, docs and signup links, the date checked, a model's ``auto_rank``), so a provider and
a model are described, validated and written to the database by one set of classes. Two field names differ
from the import file on purpose and stay as shipped: ``slug`` (import: ``name``) and ``name`` (import:
``display_name``); in code both read ``entry.slug`` / ``entry.name`` as the Provider model does.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config_schema import AdapterName, ModelSpec, NonNegativeInt, ProviderSpec, validation_problems

CATALOG_DIR = Path(__file__).resolve().parent

AuthStyle = Literal["bearer", "x-goog-api-key", "cloudflare-account-token", "none"]
# How each adapter presents the key; a keyless provider may also say "none".
ADAPTER_AUTH: dict[str, str] = {
    "openai": "bearer",
    "gemini": "x-goog-api-key",
    "cohere": "bearer",
    "cloudflare": "cloudflare-account-token",
}

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

    # Import-file fields a catalog file must not set (runs only when the file gives one).
    @field_validator("keys", "enabled", mode="before")
    @classmethod
    def _not_in_catalog(cls, value: Any) -> Any:
        raise ValueError("not a catalog field (keys are pasted in the admin, which enables and disables providers)")

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
    if errors:
        raise CatalogError("invalid provider catalog:\n" + "\n".join(errors))
    return providers


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
