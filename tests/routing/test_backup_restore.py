"""`manage.py backup` / `restore`: the whole database round-trips, secrets stay encrypted in the file, and
both commands remind that the encryption keys are not in the backup."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from providers.models import Provider, ProviderKey
from routing.models import ApiKey
from routing.services import api_key_create

SECRET = "gsk_backup-secret-7731"


@pytest.mark.django_db(transaction=True)
def test_backup_then_restore_brings_back_every_row(tmp_path, capsys, django_user_model):
    provider = Provider.objects.create(slug="groq", name="Groq", base_url="https://api.groq.com/openai/v1")
    ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    user = django_user_model.objects.create_user("alice", password="x")
    _, raw = api_key_create(user=user, name="laptop")
    path = tmp_path / "freellm.backup"

    call_command("backup", str(path))
    out = capsys.readouterr()
    assert str(path) in out.out
    assert "FREELLM_ENCRYPTION_KEYS" in out.err and "not contain" in out.err
    assert SECRET.encode() not in path.read_bytes()  # stored encrypted, as in the database

    Provider.objects.all().delete()
    django_user_model.objects.all().delete()
    call_command("restore", str(path), "--yes")
    out = capsys.readouterr()

    assert ProviderKey.objects.get(label="a").secret == SECRET
    assert ApiKey.objects.get(name="laptop").user.username == "alice"
    assert "1 provider keys" in out.out and "FREELLM_ENCRYPTION_KEYS" in out.err


@pytest.mark.django_db(transaction=True)
def test_restore_with_other_encryption_keys_says_the_secrets_are_unreadable(tmp_path, capsys, settings):
    from providers.crypto import generate_key_spec

    provider = Provider.objects.create(slug="groq", name="Groq", base_url="https://api.groq.com/openai/v1")
    ProviderKey.objects.create(provider=provider, label="a", secret=SECRET)
    path = tmp_path / "freellm.backup"
    call_command("backup", str(path))

    settings.FREELLM_ENCRYPTION_KEYS = generate_key_spec("other")
    call_command("restore", str(path), "--yes")

    assert "1 of 1 provider secrets cannot be decrypted" in capsys.readouterr().err


@pytest.mark.django_db
def test_restore_refuses_a_file_that_is_no_backup(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")

    with pytest.raises(CommandError, match="not a"):
        call_command("restore", str(path), "--yes")
