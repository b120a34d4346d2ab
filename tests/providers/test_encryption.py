"""AES-256-GCM provider secrets: round trip, nothing readable at rest, fail closed, key rotation."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from providers.crypto import DecryptionError, Keyring, generate_key_spec
from providers.models import Provider, ProviderKey

SECRET = "gsk_live_0123456789abcdefSECRET"
KEY_A = generate_key_spec("ka")
KEY_B = generate_key_spec("kb")

pytestmark = pytest.mark.django_db


def _stored(key_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM providers_providerkey WHERE id = %s", [key_id])
        return cursor.fetchone()[0]


def _set_stored(key_id: int, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE providers_providerkey SET secret = %s WHERE id = %s", [value, key_id])


@pytest.fixture
def provider() -> Provider:
    return Provider.objects.create(slug="groq", name="Groq", base_url="https://api.groq.com/openai/v1")


@override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A)
def test_round_trip_and_column_holds_no_plaintext(provider):
    key = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)

    assert ProviderKey.objects.get(pk=key.pk).secret == SECRET
    stored = _stored(key.pk)
    assert stored.startswith("v1:ka:")
    assert SECRET not in stored and "SECRET" not in stored
    blob = base64.b64decode(stored.split(":", 2)[2])
    # 12-byte nonce + ciphertext (as long as the plaintext) + 16-byte tag
    assert len(blob) == 12 + len(SECRET) + 16


@override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A)
def test_same_secret_encrypts_differently_each_time(provider):
    one = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    two = ProviderKey.objects.create(provider=provider, label="b", secret=SECRET)

    assert _stored(one.pk) != _stored(two.pk)


def test_empty_secret_stays_empty_for_keyless_providers(provider):
    key = ProviderKey.objects.create(provider=provider, label="none", secret="")

    assert _stored(key.pk) == ""
    assert ProviderKey.objects.get(pk=key.pk).secret == ""


def test_wrong_key_fails_closed(provider):
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A):
        key = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    # Same key id, different key material: authentication fails, the ciphertext is never handed on.
    impostor = "ka:" + KEY_B.split(":", 1)[1]
    with override_settings(FREELLM_ENCRYPTION_KEYS=impostor):
        with pytest.raises(DecryptionError, match="failed authentication") as caught:
            ProviderKey.objects.get(pk=key.pk)
    assert _stored(key.pk) not in str(caught.value)


def test_missing_key_fails_closed(provider):
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A):
        key = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_B):
        with pytest.raises(DecryptionError, match="'ka', which is not configured"):
            ProviderKey.objects.get(pk=key.pk)


@override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A)
def test_tampered_value_fails_closed(provider):
    key = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    stored = _stored(key.pk)
    head, b64 = stored.rsplit(":", 1)
    blob = bytearray(base64.b64decode(b64))
    blob[20] ^= 0x01  # one bit of the ciphertext
    _set_stored(key.pk, f"{head}:{base64.b64encode(bytes(blob)).decode()}")

    with pytest.raises(DecryptionError):
        ProviderKey.objects.get(pk=key.pk)


@override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A)
def test_plaintext_written_behind_the_fields_back_is_refused(provider):
    key = ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    _set_stored(key.pk, SECRET)

    with pytest.raises(DecryptionError, match="not in the v1 AES-GCM format"):
        ProviderKey.objects.get(pk=key.pk)


def test_associated_data_binds_value_to_table_and_column():
    ring = Keyring.parse(KEY_A)
    sealed = ring.encrypt(SECRET, b"providers_providerkey.secret")

    assert ring.decrypt(sealed, b"providers_providerkey.secret") == SECRET
    with pytest.raises(DecryptionError):
        ring.decrypt(sealed, b"providers_providerkey.label")
    with pytest.raises(DecryptionError):
        ring.decrypt(sealed, b"other_table.secret")


def test_field_uses_its_table_and_column_as_associated_data():
    field = ProviderKey._meta.get_field("secret")

    assert field.aad() == b"providers_providerkey.secret"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "holds no key"),
        ("nokeyhere", "look like"),
        ("k1:not-base64!", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "must be 32 bytes"),
    ],
)
def test_bad_key_specs_are_refused(spec, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        Keyring.parse(spec)


def test_rotation_reencrypts_every_row_with_the_first_key(provider):
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A):
        keys = [ProviderKey.objects.create(provider=provider, label=f"k{i}", secret=f"{SECRET}-{i}") for i in range(3)]
        keyless = ProviderKey.objects.create(provider=provider, label="keyless", secret="")
    with override_settings(FREELLM_ENCRYPTION_KEYS=f"{KEY_B},{KEY_A}"):
        out = io.StringIO()
        call_command("rotate_encryption_key", stdout=out)
        assert "re-encrypted 3 value(s) with key 'kb'" in out.getvalue()
        assert all(_stored(k.pk).startswith("v1:kb:") for k in keys)
        assert _stored(keyless.pk) == ""
        # Idempotent: nothing is left on the old key.
        again = io.StringIO()
        call_command("rotate_encryption_key", stdout=again)
        assert "re-encrypted 0 value(s)" in again.getvalue()
    # The old key can now go.
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_B):
        assert sorted(ProviderKey.objects.exclude(secret="").values_list("secret", flat=True)) == [
            f"{SECRET}-{i}" for i in range(3)
        ]


def test_rotation_is_all_or_nothing_when_a_row_cannot_be_decrypted(provider):
    with override_settings(FREELLM_ENCRYPTION_KEYS=KEY_A):
        good = ProviderKey.objects.create(provider=provider, label="good", secret=SECRET)
        bad = ProviderKey.objects.create(provider=provider, label="bad", secret=SECRET)
    other = generate_key_spec("kc")
    with override_settings(FREELLM_ENCRYPTION_KEYS=other):
        lost = ProviderKey.objects.create(provider=provider, label="lost", secret=SECRET)
    before = {k.pk: _stored(k.pk) for k in (good, bad, lost)}

    with override_settings(FREELLM_ENCRYPTION_KEYS=f"{KEY_B},{KEY_A}"):
        with pytest.raises(CommandError, match=rf"ProviderKey #{lost.pk} secret: .*'kc'.*nothing was re-encrypted"):
            call_command("rotate_encryption_key")

    assert {k.pk: _stored(k.pk) for k in (good, bad, lost)} == before


def test_generate_prints_a_fresh_key_with_an_unused_id():
    out = io.StringIO()
    with override_settings(FREELLM_ENCRYPTION_KEYS=f"k1:{KEY_A.split(':', 1)[1]}"):
        call_command("rotate_encryption_key", "--generate", stdout=out, stderr=io.StringIO())

    spec = out.getvalue().strip()
    ring = Keyring.parse(spec)
    assert ring.primary_id == "k2"
    assert len(ring.keys[0][1]) == 32


def test_production_without_encryption_keys_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FREELLM_ENCRYPTION_KEYS", "SECRET_KEY")}
    env.update(FREELLM_ENV="production", SECRET_KEY="x" * 50, FREELLM_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0
    assert "FREELLM_ENCRYPTION_KEYS must be set when FREELLM_ENV=production" in result.stderr
    assert not (tmp_path / "encryption_keys").exists()
