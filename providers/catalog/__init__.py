"""The provider catalog: what the gateway knows about each free tier, one YAML file per provider.

The files beside this module are data checked into the repo (base URL, adapter, auth style, free models
and their documented limits, each with the date it was checked). This module loads and validates them
into frozen dataclasses; writes to the database live in ``providers.services_catalog``.

Field names follow the ``import_config`` YAML format (``id``, ``kind``, ``family``, ``context_window``,
``tools``, ``limits``) so the same shapes describe both.
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

CATALOG_DIR = Path(__file__).resolve().parent

AuthStyle = Literal["bearer", "x-goog-api-key", "cloudflare-account-token", "none"]
# How each adapter presents the key; a keyless provider may also say "none".
ADAPTER_AUTH: dict[str, str] = {
    "openai": "bearer",
    "gemini": "x-goog-api-key",
    "cohere": "bearer",
    "cloudflare": "cloudflare-account-token",
}

Count = Annotated[StrictInt, Field(ge=0)]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class CatalogError(ValueError):
    """A catalog file is missing, unreadable or invalid; the message names the file and the field."""


@dataclass(config=_STRICT, kw_only=True)
class CatalogLimits:
    """Per-key limits as documented; None means not documented."""

    rpm: Count | None = None
    rpd: Count | None = None
    tpm: Count | None = None
    tpd: Count | None = None


@dataclass(config=_STRICT, kw_only=True)
class CatalogModel:
    id: str = Field(min_length=1)
    kind: Literal["chat", "embedding", "image", "transcription", "speech"] = "chat"
    family: str = ""
    dimensions: Annotated[StrictInt, Field(gt=0)] | None = None
    context_window: Annotated[StrictInt, Field(gt=0)] | None = None
    tools: StrictBool = False
    vision: StrictBool = False
    json: StrictBool = False
    fim: StrictBool = False  # served on /fim/completions too (fill in the middle)
    limits: CatalogLimits = Field(default_factory=CatalogLimits)
    # Position in the default `auto` chain across all providers; lower comes first. Only chat models.
    auto_rank: Count | None = None

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


@dataclass(config=_STRICT, kw_only=True)
class CatalogProvider:
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    name: str = Field(min_length=1, max_length=120)
    adapter: Literal["openai", "gemini", "cohere", "cloudflare"]
    base_url: str
    auth: AuthStyle
    docs_url: str
    checked: date
    models: list[CatalogModel] = Field(min_length=1)
    keyless: StrictBool = False
    headers: dict[str, str] = Field(default_factory=dict)
    drop_params: list[str] = Field(default_factory=list)
    account_rpm: Count | None = None
    account_rpd: Count | None = None
    daily_reset_tz: str = "UTC"
    signup_url: str = ""
    notes: str = ""

    @field_validator("base_url", "docs_url", "signup_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value == "":
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @field_validator("daily_reset_tz")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
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


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(file)"
        lines.append(f"{path.name}: {where}: {item['msg']}")
    return "\n".join(lines)


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
        provider = CatalogProvider(**data)
    except ValidationError as exc:
        raise CatalogError(_format_validation_error(path, exc)) from exc
    except TypeError as exc:  # a required field missing before pydantic could name it
        raise CatalogError(f"{path.name}: {exc}") from exc
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
