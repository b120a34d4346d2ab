"""Add catalog providers and their keys from a .env file (or bare keys, one per line).

Each line's provider is recognised from the variable name (GROQ_API_KEY, ...) or the key's prefix (gsk_,
sk-or-, AIza, nvapi-, ...). Shows the preview (masked keys, unrecognised lines), then adds the providers
from the catalog and tests each key with one cheap call. ``--dry-run`` only prints the preview and writes
nothing; ``--no-test`` stores the keys without calling the providers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from providers.services_key_import import key_import_apply, key_import_preview


class Command(BaseCommand):
    help = "Import provider keys from a .env file: recognise, preview (masked), add from the catalog, test."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="a .env file, or - for standard input")
        parser.add_argument("--dry-run", action="store_true", help="print the preview only; write nothing")
        parser.add_argument("--no-test", action="store_true", help="do not test the keys with a call")

    def handle(self, *args, file: str, dry_run: bool, no_test: bool, **options) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        preview = key_import_preview(text=text)
        for line in preview.lines():
            self.stdout.write(line)
        providers = preview.by_provider()
        summary = (f"{len(preview.candidates)} key(s) for {len(providers)} provider(s); "
                   f"{len(preview.unrecognised)} line(s) not recognised")
        if dry_run or not preview.candidates:
            self.stdout.write(self.style.SUCCESS(summary + ("; dry run: nothing written" if dry_run else "")))
            return
        failed = 0
        for outcome in key_import_apply(preview=preview, test_keys=not no_test):
            if outcome.result is None:
                failed += 1
                self.stderr.write(self.style.ERROR(f"! {outcome.slug}: {outcome.error}"))
                continue
            verb = "added" if outcome.result.created else "updated"
            self.stdout.write(f"{outcome.slug}: provider {verb} from the catalog")
            for check in outcome.result.keys:
                state = {True: "works", False: "REJECTED", None: "not confirmed"}[check.ok]
                new = "" if check.created else " (already stored)"
                self.stdout.write(f"  {check.label} {check.masked}{new}: {state}: {check.detail}")
        self.stdout.write(self.style.SUCCESS(summary))
        if failed:
            raise CommandError(f"{failed} provider(s) could not be added")
