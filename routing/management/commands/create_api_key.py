from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.services import api_key_create


class Command(BaseCommand):
    help = "Create a unified API key for a user and print it (once: only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username of the key's owner")
        parser.add_argument("--name", default="default", help="a label to recognise the key by")

    def handle(self, *args, user: str, name: str, **options) -> None:
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user named {user!r} (create one in the admin or with createsuperuser)")
        api_key, raw = api_key_create(user=owner, name=name)
        self.stderr.write(f"API key {api_key.name!r} for {owner.username}; shown once, store it now:")
        self.stdout.write(raw)
