from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.models import split_patterns
from routing.services import api_key_create


def _limit(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Create a unified API key for a user and print it (once: only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username of the key's owner")
        parser.add_argument("--name", default="default", help="a label to recognise the key by")
        # The key's own budget; the user's (admin → User budgets, or the YAML `users:` section) applies too.
        parser.add_argument("--rpm", type=_limit, help="requests per minute this key may make")
        parser.add_argument("--rpd", type=_limit, help="requests per day (UTC) this key may make")
        parser.add_argument("--tpd", type=_limit, help="tokens per day (UTC) this key may spend")
        parser.add_argument("--chains", default="",
                            help="the chains/models this key may use, comma separated; patterns like groq/* work")

    def handle(self, *args, user: str, name: str, rpm: int | None = None, rpd: int | None = None,
               tpd: int | None = None, chains: str = "", **options) -> None:
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user named {user!r} (create one in the admin or with createsuperuser)")
        api_key, raw = api_key_create(user=owner, name=name, rpm=rpm, rpd=rpd, tpd=tpd,
                                      allowed_models=split_patterns(chains))
        self.stderr.write(f"API key {api_key.name!r} for {owner.username}; shown once, store it now:")
        self.stdout.write(raw)
