from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.services_backup import KEYS_REMINDER, BackupError, database_backup


class Command(BaseCommand):
    help = ("Copy the whole database to a file (SQLite: online backup; PostgreSQL: pg_dump). Provider secrets "
            "stay encrypted in it; the encryption keys are not in it.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="the backup file (default: var/backups/freellm-<time>.<ext>)")

    def handle(self, *args, path: str | None, **options) -> None:
        try:
            written = database_backup(path=path)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"database backed up to {written}")
        self.stderr.write(self.style.WARNING(KEYS_REMINDER))
