from __future__ import annotations

import os

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from providers.crypto import PREFIX, DecryptionError, EncryptedTextField, generate_key_spec, keyring


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted column with the first key of FREELLM_ENCRYPTION_KEYS. "
        "With --generate, print a new key to prepend to FREELLM_ENCRYPTION_KEYS instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--generate", action="store_true", help="print a new key spec and how to roll it out")

    def handle(self, *args, generate: bool, **options) -> None:
        if generate:
            self._generate()
            return
        ring = keyring()
        current = f"{PREFIX}:{ring.primary_id}:"
        total = 0
        with transaction.atomic():
            for model, field in _encrypted_fields():
                # Cast to a plain TextField reads the stored form without decrypting it.
                rows = model._default_manager.annotate(_stored=Cast(field.name, TextField())).values_list("pk", "_stored")
                for pk, stored in rows:
                    if not stored or stored.startswith(current):
                        continue
                    try:
                        plaintext = ring.decrypt(stored, field.aad())
                    except DecryptionError as exc:
                        raise CommandError(
                            f"{model._meta.label} #{pk} {field.name}: {exc}; nothing was re-encrypted"
                        ) from None
                    # update() runs get_prep_value: the value is sealed again with the first key.
                    model._default_manager.filter(pk=pk).update(**{field.name: plaintext})
                    total += 1
        self.stdout.write(self.style.SUCCESS(f"re-encrypted {total} value(s) with key {ring.primary_id!r}"))
        if len(ring.keys) > 1:
            older = ", ".join(key_id for key_id, _ in ring.keys[1:])
            self.stdout.write(f"no value needs the older key(s) {older} any more; you may remove them")

    def _generate(self) -> None:
        used = {key_id for key_id, _ in keyring().keys}
        number = len(used) + 1
        while f"k{number}" in used:
            number += 1
        spec = generate_key_spec(f"k{number}")
        self.stdout.write(spec)
        if os.environ.get("FREELLM_ENCRYPTION_KEYS"):
            where = "FREELLM_ENCRYPTION_KEYS"
        else:
            where = f"{settings.VAR_DIR / 'encryption_keys'} (the embedded default; or set FREELLM_ENCRYPTION_KEYS)"
        self.stderr.write(
            f"Put it first in {where}, comma separated, keeping the current keys after it;\n"
            "restart freellm, then run `manage.py rotate_encryption_key`."
        )


def _encrypted_fields():
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                yield model, field
