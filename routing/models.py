"""Unified API keys (what clients send), their budgets, and the router's persistent state."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models

from .quota.base import HealthState

API_KEY_PREFIX = "fl-"
VISIBLE_PREFIX_LEN = 11  # "fl-" + 8 characters: enough to recognise a key in lists, useless to an attacker


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def split_patterns(text: str) -> tuple[str, ...]:
    """The allowed-models field as patterns: comma or newline separated, blanks dropped."""
    return tuple(p.strip() for p in text.replace("\n", ",").split(",") if p.strip())


class Budget(models.Model):
    """What one API key, or every key of one user, may spend: both apply to a request (routing/budgets.py).

    Empty means no limit. Counted in the quota store like a provider's quota (atomic across processes)."""

    rpm = models.PositiveIntegerField("requests / minute", null=True, blank=True, help_text="Empty: no limit.")
    rpd = models.PositiveIntegerField("requests / day", null=True, blank=True, help_text="Empty: no limit (UTC days).")
    tpd = models.PositiveIntegerField("tokens / day", null=True, blank=True, help_text="Empty: no limit (UTC days).")
    allowed_models = models.TextField(
        "allowed chains and models", blank=True,
        help_text="Comma or newline separated names or patterns (fast, groq/*, *-embed); empty: every one.",
    )

    class Meta:
        abstract = True

    @property
    def allowed_patterns(self) -> tuple[str, ...]:
        return split_patterns(self.allowed_models)

    @property
    def has_budget(self) -> bool:
        return any(v is not None for v in (self.rpm, self.rpd, self.tpd)) or bool(self.allowed_patterns)


class ApiKey(Budget):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        # Staff hold this; members (without it) see and manage only their own keys in the admin.
        permissions = [("manage_all_api_keys", "Can see and manage every team member's API keys")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def new_raw_key() -> str:
        return API_KEY_PREFIX + secrets.token_urlsafe(32)


class UserBudget(Budget):
    """A team member's limits, shared by all their keys (each key may have tighter ones of its own)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget")

    class Meta:
        verbose_name = "user budget"

    def __str__(self) -> str:
        return f"budget of {self.user}"


class QuotaWindow(models.Model):
    """A periodic snapshot of one quota window of one route (provider, model, key) for the admin.

    The live counters are in the quota store (Redis or in-process); these rows are rolled up from it by
    the ``quota_windows_rollup`` service, so the admin can list, sort and filter them.
    """

    class Window(models.TextChoices):
        RPM = "rpm", "requests / minute"
        RPD = "rpd", "requests / day"
        TPM = "tpm", "tokens / minute"
        TPD = "tpd", "tokens / day"
        PROVIDER_RPM = "provider_rpm", "provider requests / minute"
        PROVIDER_RPD = "provider_rpd", "provider requests / day"

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    key_label = models.CharField(max_length=100, blank=True)
    window = models.CharField(max_length=16, choices=Window.choices)
    used = models.PositiveIntegerField(default=0)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="Effective: min(configured, learned).")
    configured_limit = models.PositiveIntegerField(null=True, blank=True)
    learned_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Reported by the provider (rate-limit headers or error texts)."
    )
    # The route's circuit at the snapshot, labelled as the admin shows it.
    HEALTH_CHOICES = [
        (HealthState.CLOSED.value, "closed"),
        (HealthState.OPEN.value, "open: cooling down"),
        (HealthState.HALF_OPEN.value, "half-open: on trial"),
        (HealthState.KEY_INVALID.value, "key invalid"),
    ]
    health = models.CharField(max_length=16, choices=HEALTH_CHOICES, default=HealthState.CLOSED.value)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    exhausted_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["provider", "model", "key_label", "window"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model", "key_label", "window"], name="uniq_quota_window")
        ]
        indexes = [models.Index(fields=["health"])]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}/{self.key_label or '-'} {self.window}"

    @property
    def usage_ratio(self) -> float | None:
        return None if not self.limit else self.used / self.limit


class StoredResponse(models.Model):
    """A Responses API answer kept for ``previous_response_id`` and GET/DELETE /v1/responses/{id}, when the
    gateway runs without Redis (with Redis they live there, under a TTL). Pruned by the beat job once
    ``expires_at`` has passed.

    ``input_items`` are this request's own input; ``ancestry`` the ids of the earlier responses of the same
    conversation, oldest first, so a continuation reads the whole history in one query.
    """

    id = models.CharField(primary_key=True, max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, related_name="+")
    response = models.JSONField()
    input_items = models.JSONField(default=list)
    ancestry = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id
