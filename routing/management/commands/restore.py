from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.services_backup import KEYS_REMINDER, BackupError, database_restore


class Command(BaseCommand):
    help = ("Replace the whole database with a file written by `manage.py backup`. Stop the gateway and the "
            "Celery worker first. The encryption keys the backup was made with must be in FREELLM_ENCRYPTION_KEYS.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="a file written by `manage.py backup`")
        parser.add_argument("--yes", action="store_true", help="do not ask before replacing the database")

    def handle(self, *args, path: str, yes: bool, **options) -> None:
        if not yes:
            answer = input("This replaces every row of the database with the backup. Type 'yes' to go on: ")
            if answer.strip().lower() != "yes":
                raise CommandError("restore cancelled")
        try:
            report = database_restore(path=path)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"database restored from {path} ({report.provider_keys} provider keys)")
        if report.undecryptable:
            self.stderr.write(self.style.ERROR(
                f"{report.undecryptable} of {report.provider_keys} provider secrets cannot be decrypted with the "
                "current FREELLM_ENCRYPTION_KEYS: put the keys the backup was made with into it and restart."))
        self.stderr.write(self.style.WARNING(KEYS_REMINDER))
