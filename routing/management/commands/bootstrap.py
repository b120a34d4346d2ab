from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from freellm.celery import ensure_periodic_tasks
from providers.management.commands.import_config import import_file
from providers.models import Provider
from routing.services import first_admin_create, team_groups_sync

# A request anyone can paste; `auto` is the chain name clients use when they do not care which model.
CURL = (
    "curl {base}/v1/chat/completions -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" "
    "-d '{{\"model\": \"auto\", \"messages\": [{{\"role\": \"user\", \"content\": \"Say hello\"}}]}}'"
)


class Command(BaseCommand):
    help = (
        "Prepare a freellm database (idempotent; `./dev run` calls it on every start): team groups, "
        "the first admin account and API key, and freellm.yaml if present."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--config",
            type=Path,
            default=settings.BASE_DIR / "freellm.yaml",
            help="config file imported when it exists (default: freellm.yaml at the project root)",
        )

    def handle(self, *args, config: Path, **options) -> None:
        with transaction.atomic():
            team_groups_sync()
            ensure_periodic_tasks()  # the Celery beat schedule (quota rollups, probes, pruning)
            first = first_admin_create(password=os.environ.get("FREELLM_ADMIN_PASSWORD") or None)
        if config.exists():
            report = import_file(config)
            for line in report.changes:
                self.stdout.write(f"  {line}")
            self.stdout.write(f"{config.name}: {len(report.changes) or 'no'} change(s)")
        elif not Provider.objects.exists():
            self.stdout.write(
                f"No providers yet: add them in the admin, or describe them in {config.name} (see README) "
                "and restart."
            )
        base = f"http://{_url_host(settings.FREELLM_BIND)}:{settings.FREELLM_PORT}"
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("freellm"))
        self.stdout.write(f"  admin:   {base}/admin/")
        if first is not None:
            if first.password:
                self.stdout.write(f"  login:   admin / {first.password}   (generated, shown once: change it in the admin)")
            else:
                self.stdout.write("  login:   admin / the password in FREELLM_ADMIN_PASSWORD")
            self.stdout.write(f"  API key: {first.raw_api_key}   (shown once: only its hash is stored)")
            key = first.raw_api_key
        else:
            self.stdout.write("  API key: create one in the admin or with `manage.py create_api_key --user NAME`")
            key = "$FREELLM_API_KEY"
        self.stdout.write(f"  try:     {CURL.format(base=base, key=key)}")
        self.stdout.write("")


def _url_host(bind: str) -> str:
    # A wildcard bind is not an address a browser or curl can use; the loopback one always works locally.
    if bind in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind else bind
