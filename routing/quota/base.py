"""The one interface the router uses for quota and health bookkeeping.

Every attempt goes: ``reserve`` (atomic check-and-take of the request and its estimated tokens, refused
while the route is cooling down) → upstream call → ``settle`` with the real usage, plus ``record`` of the
outcome (success, or the ``ErrorKind`` of the failure) which drives the circuit breaker. Backends: local
in-process (embedded default) and Redis (shared by every gateway process).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from providers.adapters.base import ErrorKind


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None
    tpd: int | None = None


@dataclass(frozen=True)
class Route:
    """One (provider, model, key). ``key`` is the key's label ("" for keyless providers)."""

    provider: str
    model: str
    key: str
    limits: Limits = Limits()
    # Caps shared by every key and model of the provider (only rpm/rpd are used).
    provider_limits: Limits = Limits()
    daily_reset_tz: str = "UTC"

    @property
    def id(self) -> str:
        return f"{self.provider}|{self.model}|{self.key}"

    @property
    def key_id(self) -> str:
        return f"{self.provider}|{self.key}"

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}/{self.key or '-'}"


@dataclass(frozen=True)
class Lease:
    id: str
    route_id: str
    tokens: int  # tokens reserved (estimate); settle replaces this with the real figure
    expires_at: float


class DenyReason(StrEnum):
    """Why ``reserve`` refused: a window that is full, or the route's health."""

    RPM = "rpm"
    RPD = "rpd"
    TPM = "tpm"
    TPD = "tpd"
    PROVIDER_RPM = "provider_rpm"  # a cap shared by every key and model of the provider
    PROVIDER_RPD = "provider_rpd"
    COOLDOWN = "cooldown"  # the circuit is open
    HALF_OPEN = "half_open"  # the cooldown is over and another request holds the trial
    KEY_INVALID = "key_invalid"


@dataclass(frozen=True)
class Denied:
    """Why a route may not be called now."""

    reason: DenyReason
    retry_after: float  # seconds until it may pass again (best estimate)


class HealthState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    KEY_INVALID = "key_invalid"  # the key failed auth: every model of it is off until cleared


# What a route keeps of its last error's text (the provider's words, already redacted of secrets).
LAST_ERROR_CHARS = 300


@dataclass(frozen=True)
class LastError:
    at: float  # wall clock
    kind: str  # an ErrorKind value
    message: str


@dataclass
class RouteStatus:
    """What the admin shows for a route."""

    health: HealthState = HealthState.CLOSED
    cooldown_until: float | None = None
    failures: int = 0
    used: Mapping[str, int] = field(default_factory=dict)  # window name → used (rpm, rpd, tpm, tpd)
    learned: Mapping[str, int] = field(default_factory=dict)  # limits learned from headers / error texts
    # Added by the quota backends: the effective limits (min of configured and learned; None = unlimited),
    # whether the key is disabled after an auth failure, and a window the provider reported empty.
    limits: Mapping[str, int | None] = field(default_factory=dict)
    key_invalid: bool = False
    exhausted_until: float | None = None
    exhausted_reason: str = ""
    last_success_at: float | None = None  # wall clock of the last call that succeeded
    last_error: LastError | None = None


class QuotaStore(ABC):
    @abstractmethod
    async def reserve(self, route: Route, tokens: int) -> Lease | Denied: ...

    @abstractmethod
    async def settle(self, lease: Lease, used_tokens: int) -> None:
        """The request was made; replace the token estimate by the real usage."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """The request never reached the provider (connection refused): give the reservation back."""

    @abstractmethod
    async def record(
        self,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        """Outcome of an attempt: None for success, else the error kind; headers/message feed limit learning."""

    async def finish(
        self,
        lease: Lease,
        used_tokens: int,
        route: Route,
        error: ErrorKind | None,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        message: str = "",
    ) -> None:
        """``settle`` then ``record``: how every answered call ends. A backend may do both in one round trip."""
        await self.settle(lease, used_tokens)
        await self.record(route, error, retry_after=retry_after, headers=headers, message=message)

    @abstractmethod
    async def status(self, route: Route) -> RouteStatus: ...

    @abstractmethod
    async def clear_cooldown(self, route: Route) -> None: ...

    async def headroom(self, route: Route) -> float:
        """0..1, how much of the tightest window is left (used to order a model's keys). 1 when unknown."""
        return 1.0

    async def headrooms(self, routes: Sequence[Route]) -> list[float]:
        """``headroom`` of each route; a backend with a network between reads them in one round trip."""
        return [await self.headroom(route) for route in routes]

    async def set_key_invalid(self, route: Route, invalid: bool) -> None:
        """Mark ``route``'s key (all its models) invalid or valid again, e.g. after a health probe."""
        raise NotImplementedError

