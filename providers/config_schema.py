"""The shape of the declarative config file (`manage.py import_config` / `export_config`).

Pydantic checks types and field names; ``config_import`` in providers/services.py checks what needs the
whole file or the database (duplicates, chain references, secrets). Every problem is reported as
``<path>: <message>``, e.g. ``providers[0].models[2].limits.rpm: must be a non-negative integer``
(``validation_problems``, also used for the provider catalog, whose entries are these specs plus metadata).

Names: the file's field names are the public contract (``name``, ``display_name``, ``tools``, ``json``...);
in code a spec's attributes carry the database's names (``slug``, ``name``, ``supports_json``...), the
file's name being the alias, so one flag has one name in code.
"""

from __future__ import annotations

import re
import types
import typing
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .models import ChainStrategy, FusionMode, ModelKind, Provider
from .netguard import proxy_url_check, upstream_url_check

NonNegativeInt = Annotated[int, Field(ge=0)]
Kind = Literal[tuple(ModelKind.values)]  # type: ignore[valid-type]
AdapterName = Literal[tuple(Provider.Adapter.values)]  # type: ignore[valid-type]
StrategyName = Literal[tuple(ChainStrategy.values)]  # type: ignore[valid-type]
FusionModeName = Literal[tuple(FusionMode.values)]  # type: ignore[valid-type]
SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


class ConfigError(Exception):
    """The file is not a valid config. ``problems`` are ``<path>: <message>`` lines; never secrets."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Spec(BaseModel):
    # strict: YAML already yields typed values, so "30" for a number or "yes" for a flag is a mistake.
    # Fields are read by their file name only (the alias where there is one).
    model_config = ConfigDict(extra="forbid", strict=True)


class LimitsSpec(_Spec):
    rpm: NonNegativeInt | None = None
    rpd: NonNegativeInt | None = None
    tpm: NonNegativeInt | None = None
    tpd: NonNegativeInt | None = None


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def proxy_url_problem(value: str) -> str | None:
    """Why ``value`` is not a usable outbound proxy URL (None when it is; "" means no proxy)."""
    if value == "":
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in PROXY_SCHEMES or not parsed.hostname or any(c.isspace() for c in value):
        return "must be a proxy URL such as http://host:3128, https://host:443 or socks5://user:pass@host:1080"
    try:
        _ = parsed.port
    except ValueError:
        return "has an invalid port"
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        return "must not have a path, query or fragment (scheme://[user:pass@]host:port)"
    try:
        proxy_url_check(value)
    except ValueError as exc:
        return f"is refused: {exc}"
    return None


def _proxy(value: str | None) -> str | None:
    if value is not None and (problem := proxy_url_problem(value)):
        raise ValueError(problem)
    return value


class KeySpec(_Spec):
    label: str = Field(min_length=1, max_length=100)
    secret: str | None = None  # "" = a key slot without a secret (keyless providers)
    secret_env: str | None = Field(default=None, min_length=1)
    # None = keep what is stored (an export without secrets leaves a proxy with a password out); "" = none.
    proxy: str | None = None
    enabled: bool = True

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        return _proxy(value)


class ModelSpec(_Spec):
    id: str = Field(min_length=1, max_length=200)
    kind: Kind = ModelKind.CHAT.value
    family: str = Field(default="", max_length=100)
    canonical: str = Field(default="", max_length=200)
    dimensions: NonNegativeInt | None = None
    context_window: NonNegativeInt | None = None
    supports_tools: bool = Field(default=False, alias="tools")
    supports_vision: bool = Field(default=False, alias="vision")
    supports_json: bool = Field(default=False, alias="json")
    # Fill in the middle on /fim/completions: legacy completions go there natively.
    supports_fim: bool = Field(default=False, alias="fim")
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    enabled: bool = True

    def db_values(self) -> dict[str, Any]:
        """The UpstreamModel field values this spec stands for (model_id and provider aside)."""
        return {
            "kind": self.kind,
            "family": self.family,
            "canonical": self.canonical,
            "dimensions": self.dimensions,
            "context_window": self.context_window,
            "supports_tools": self.supports_tools,
            "supports_vision": self.supports_vision,
            "supports_json": self.supports_json,
            "supports_fim": self.supports_fim,
            "rpm": self.limits.rpm,
            "rpd": self.limits.rpd,
            "tpm": self.limits.tpm,
            "tpd": self.limits.tpd,
            "enabled": self.enabled,
        }


class ProviderSpec(_Spec):
    slug: str = Field(alias="name", min_length=1, max_length=64)
    name: str | None = Field(default=None, alias="display_name", min_length=1, max_length=120)
    adapter: AdapterName = Provider.Adapter.OPENAI.value
    base_url: str = Field(max_length=500)
    headers: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    keyless: bool = False
    drop_params: list[str] = Field(default_factory=list)
    account_rpm: NonNegativeInt | None = None
    account_rpd: NonNegativeInt | None = None
    daily_reset_tz: str = "UTC"
    # None = keep what is stored (see KeySpec.proxy); "" = no proxy.
    proxy: str | None = None
    keys: list[KeySpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        return _proxy(value)

    def db_values(self) -> dict[str, Any]:
        """The Provider field values this spec stands for (slug aside; keys and models are rows of their own)."""
        values = {
            "name": self.name or self.slug,
            "adapter": self.adapter,
            "base_url": self.base_url,
            "headers": dict(self.headers),
            "enabled": self.enabled,
            "keyless": self.keyless,
            "drop_params": list(self.drop_params),
            "account_rpm": self.account_rpm,
            "account_rpd": self.account_rpd,
            "daily_reset_tz": self.daily_reset_tz,
        }
        if self.proxy is not None:
            values["proxy"] = self.proxy
        return values

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be a slug (letters, digits, '-' and '_'); it is the first part of route names")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        # Looser than URLValidator on purpose: in-cluster hosts such as http://ollama:11434/v1 are fine.
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL")
        # Internal addresses only through FREELLM_UPSTREAM_ALLOW (SSRF: the provider's key is sent there).
        upstream_url_check(value)
        return value

    @field_validator("daily_reset_tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as UTC or America/Los_Angeles") from None
        return value


class FusionSpec(_Spec):
    """A fusion chain's panel: how many members answer, who judges, and how the answer is made."""

    panel: int = Field(default=3, ge=2, le=8)
    judge: str = Field(default="", max_length=300)  # provider/model (or a chain) that writes or picks the answer
    mode: FusionModeName = FusionMode.JUDGE.value

    @model_validator(mode="after")
    def _judge_writes(self) -> FusionSpec:
        if self.mode == FusionMode.JUDGE and not self.judge:
            raise ValueError("mode judge needs a judge (provider/model); mode best_of works without one")
        return self


class ChainSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    kind: Kind = ModelKind.CHAT.value
    strategy: StrategyName = ChainStrategy.PRIORITY.value
    description: str = Field(default="", max_length=300)
    enabled: bool = True
    cache_ttl: NonNegativeInt = 0
    cache_shared: bool = False
    fusion: FusionSpec | None = None
    models: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _fusion_for_fusion(self) -> ChainSpec:
        if self.strategy == ChainStrategy.FUSION and self.kind != ModelKind.CHAT:
            raise ValueError("strategy fusion is for chat chains")
        return self

    def db_values(self) -> dict[str, Any]:
        """The FallbackChain field values this spec stands for (name aside; members are rows of their own)."""
        fusion = self.fusion.model_dump() if self.fusion else {}
        if self.strategy == ChainStrategy.FUSION and not fusion:
            fusion = FusionSpec(mode=FusionMode.BEST_OF).model_dump()
        return {"kind": self.kind, "strategy": self.strategy, "description": self.description,
                "enabled": self.enabled, "cache_ttl": self.cache_ttl, "cache_shared": self.cache_shared,
                "fusion": fusion}


def fusion_problems(data: Any, *, strategy: str) -> list[str]:
    """What is wrong with a chain's stored fusion settings (the admin's check; the file's is ChainSpec)."""
    if not data and strategy != ChainStrategy.FUSION:
        return []
    try:
        FusionSpec.model_validate(data or {"mode": FusionMode.BEST_OF.value})
    except ValidationError as exc:
        return validation_problems(exc, FusionSpec)
    return []


class AliasSpec(_Spec):
    pattern: str = Field(min_length=1, max_length=200)  # fnmatch, case-sensitive
    target: str = Field(min_length=1, max_length=300)  # a chain name or a provider/model route
    enabled: bool = True


class ConfigSpec(_Spec):
    providers: list[ProviderSpec] = Field(default_factory=list)
    chains: list[ChainSpec] = Field(default_factory=list)
    # In order: the first pattern that matches a requested name the config does not know wins.
    aliases: list[AliasSpec] = Field(default_factory=list)
    # The registered sections present in the file (name → parsed value), see ConfigSection.
    _sections: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def sections(self) -> dict[str, Any]:
        return self._sections


@dataclass(frozen=True)
class ConfigSection:
    """A top-level section of the file owned by an app above this one (routing's ``users:``, with budgets),
    so that one file and one import/export cover everything while providers imports no other app.

    ``spec``: the section's type (e.g. ``list[UserSpec]``); ``apply(value, prune=, report=)`` runs inside
    the import's transaction after providers and chains and raises ConfigError to refuse the whole file;
    ``export()`` returns the section's value in the file's format (empty: left out)."""

    name: str
    spec: Any
    apply: Callable[..., None]
    export: Callable[[], Any]


config_sections: dict[str, ConfigSection] = {}


def register_config_section(section: ConfigSection) -> None:
    config_sections[section.name] = section


def config_parse(data: Any) -> ConfigSpec:
    """Validate loaded YAML; raise ConfigError naming every bad field by its path."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping with `providers` and/or `chains`"])
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name, section in config_sections.items():
        if name in data:
            try:
                sections[name] = TypeAdapter(section.spec).validate_python(data[name])
            except ValidationError as exc:
                problems += [f"{format_path((name, *e['loc']))}: {_message(e, section.spec)}" for e in exc.errors()]
    try:
        spec = ConfigSpec.model_validate({k: v for k, v in data.items() if k not in config_sections})
    except ValidationError as exc:
        problems = validation_problems(exc, ConfigSpec) + problems
        spec = None
    if problems:
        raise ConfigError(problems)
    spec._sections.update(sections)
    return spec


def validation_problems(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """``<path>: <message>`` for each problem pydantic found validating ``root`` (the one formatter)."""
    return [f"{format_path(e['loc'])}: {_message(e, root)}" for e in error.errors()]


def format_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


_MESSAGES = {
    "missing": "is required",
    "int_type": "must be a non-negative integer",
    "int_from_float": "must be a non-negative integer",
    "greater_than_equal": "must be a non-negative integer",
    "bool_type": "must be true or false",
    "string_type": "must be a string (quote it)",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


def _message(error: dict, root: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(error["loc"][:-1], root)
        if root is ConfigSpec and len(error["loc"]) == 1:
            allowed += list(config_sections)
        return "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    return _MESSAGES.get(kind, error["msg"])


def _allowed_fields(loc: tuple, root: Any) -> list[str]:
    """The field names the file may use at ``loc`` (walks the spec classes along the path)."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in _by_alias(current):
            current = _unwrap_optional(_by_alias(current)[part].annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(_by_alias(current))
    return []


def _by_alias(spec: type[BaseModel]) -> dict:
    return {info.alias or name: info for name, info in spec.model_fields.items()}


def _unwrap_optional(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation
