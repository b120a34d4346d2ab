"""Unified API keys (what clients send) and the router's persistent state."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models

API_KEY_PREFIX = "fl-"
VISIBLE_PREFIX_LEN = 11  # "fl-" + 8 characters: enough to recognise a key in lists, useless to an attacker


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
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
