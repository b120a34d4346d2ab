"""AES-256-GCM encrypted model field for provider secrets.

Stored form: ``v1:<key id>:<base64(nonce || ciphertext || tag)>`` with a random 96-bit nonce. The
associated data is ``<db_table>.<column>`` so a value copied into another table or column fails to
decrypt. Several keys may be configured (FREELLM_ENCRYPTION_KEYS, the first encrypts, all decrypt).
Failing closed: a wrong, missing or tampered key raises ``DecryptionError``; ciphertext is never handed
on as if it were the secret (django-encrypted-model-fields does exactly that, hence this field).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.views.decorators.debug import sensitive_variables

PREFIX = "v1"


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key. Never carries the value."""


@dataclass(frozen=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]  # (key id, 32-byte key); the first encrypts

    def __repr__(self) -> str:
        # Never the key material: a Keyring shows up in tracebacks and error reports.
        return f"Keyring(ids={[key_id for key_id, _ in self.keys]})"

    @classmethod
    @sensitive_variables()
    def parse(cls, spec: str) -> Keyring:
        keys = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key_id, sep, b64 = part.partition(":")
            if not sep or not key_id:
                raise ImproperlyConfigured("FREELLM_ENCRYPTION_KEYS entries look like '<id>:<base64 32-byte key>'")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError as exc:
                raise ImproperlyConfigured(f"encryption key {key_id!r} is not valid base64") from exc
            if len(raw) != 32:
                raise ImproperlyConfigured(f"encryption key {key_id!r} must be 32 bytes (AES-256), got {len(raw)}")
            keys.append((key_id, raw))
        if not keys:
            raise ImproperlyConfigured("FREELLM_ENCRYPTION_KEYS holds no key")
        return cls(tuple(keys))

    @property
    def primary_id(self) -> str:
        return self.keys[0][0]

    @sensitive_variables("key", "plaintext")
    def encrypt(self, plaintext: str, aad: bytes) -> str:
        key_id, key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), aad)
        return f"{PREFIX}:{key_id}:{base64.b64encode(nonce + sealed).decode()}"

    @sensitive_variables("key")
    def decrypt(self, stored: str, aad: bytes) -> str:
        version, _, rest = stored.partition(":")
        key_id, _, b64 = rest.partition(":")
        if version != PREFIX or not b64:
            raise DecryptionError("stored secret is not in the v1 AES-GCM format")
        key = dict(self.keys).get(key_id)
        if key is None:
            raise DecryptionError(f"stored secret was encrypted with key {key_id!r}, which is not configured")
        try:
            blob = base64.b64decode(b64, validate=True)
            return AESGCM(key).decrypt(blob[:12], blob[12:], aad).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(f"stored secret failed authentication with key {key_id!r}") from exc


@lru_cache(maxsize=4)
def _keyring_for(spec: str) -> Keyring:
    return Keyring.parse(spec)


def keyring() -> Keyring:
    # Keyed by the setting's value so tests that override it get a fresh keyring.
    return _keyring_for(settings.FREELLM_ENCRYPTION_KEYS)


def generate_key_spec(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class EncryptedTextField(models.TextField):
    """A TextField whose value is AES-256-GCM encrypted at rest. Empty string stays empty (keyless)."""

    def aad(self) -> bytes:
        return f"{self.model._meta.db_table}.{self.column}".encode()

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return keyring().decrypt(value, self.aad())

    @sensitive_variables("value")
    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return keyring().encrypt(value, self.aad())
