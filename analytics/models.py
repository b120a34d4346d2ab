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
