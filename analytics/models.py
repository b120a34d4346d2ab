"""What happened: one row per gateway request, written off the hot path."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RequestLog(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok"
        CLIENT_ERROR = "client_error"
        EXHAUSTED = "exhausted", "All routes exhausted"
        UPSTREAM_ERROR = "upstream_error"
        INCOMPLETE = "incomplete", "Stream broke after first byte"
        CANCELLED = "cancelled", "Client disconnected"
        CACHE_HIT = "cache_hit", "Served from the response cache"

    created_at = models.DateTimeField(db_index=True)
    # X-FreeLLM-Request-Id of the response; "" for rows written before it existed.
    request_id = models.CharField(max_length=32, blank=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    api_key = models.ForeignKey("routing.ApiKey", null=True, blank=True, on_delete=models.SET_NULL)
    endpoint = models.CharField(max_length=40)
    # The wire the request came in through (routing.api.dialects.Dialect): openai, anthropic, responses, ...
    dialect = models.CharField(max_length=16, default="openai", db_index=True)
    requested_model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    key_label = models.CharField(max_length=100, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    attempts = models.PositiveSmallIntegerField(default=0)
    trail = models.JSONField(default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    session_id = models.CharField(max_length=100, blank=True)
    switched = models.CharField(max_length=300, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["provider", "created_at"]),
            models.Index(fields=["outcome", "created_at"]),
            models.Index(fields=["user", "created_at"]),
        ]
        # Staff hold this; members with only view_requestlog see their own requests in the admin.
        permissions = [("view_all_requests", "Can see every team member's requests and the live feed")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.endpoint} {self.status_code}"


class StickySession(models.Model):
    """A conversation pinned to one model, mirrored from the session store for the admin (off the hot path).

    ``key`` is the hashed session key (never the raw header, user field or message text).
    """

    key = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=16, help_text="What identified the session: header, user or conversation.")
    api_key = models.ForeignKey("routing.ApiKey", null=True, blank=True, on_delete=models.SET_NULL)
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    switches = models.PositiveIntegerField(default=0)
    last_switch_reason = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField()
    last_used = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_used"]

    def __str__(self) -> str:
        return f"{self.key[:12]}… → {self.provider}/{self.model}"


class Incident(models.Model):
    """One alert, from the moment a rule sees a problem until it is gone (analytics/alerts.py).

    ``key`` names what is wrong (rule and subject, e.g. ``key_invalid:groq/groq-0``); at most one incident per
    key is open. The webhook is told once when it opens and once when it resolves: ``notified_at`` and
    ``recovery_notified_at`` are kept here, so "once" holds across restarts of the worker.
    """

    class Rule(models.TextChoices):
        KEY_INVALID = "key_invalid", "provider key invalid"
        ROUTE_FAILING = "route_failing", "route failing"
        CHAIN_UNUSABLE = "chain_unusable", "chain with no usable member"
        QUOTA_FORECAST = "quota_forecast", "daily quota runs out before its reset"
        REQUEST_LOG_DROPS = "request_log_drops", "request-log rows dropped"

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    rule = models.CharField(max_length=32, choices=Rule.choices)
    key = models.CharField(max_length=300, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    summary = models.CharField(max_length=500)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    recovery_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(state="open"), name="one_open_incident_per_key")
        ]
        indexes = [models.Index(fields=["state", "rule"])]

    def __str__(self) -> str:
        return f"{self.get_rule_display()}: {self.summary[:80]} ({self.state})"
