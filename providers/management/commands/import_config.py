from __future__ import annotations

from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from providers.config_schema import ConfigError
from providers.crypto import DecryptionError
from providers.services import config_import


class Command(BaseCommand):
    help = "Create or update providers, keys, models and chains from a YAML file (all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the YAML config file (format: see README)")
        parser.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
        parser.add_argument("--prune", action="store_true", help="delete providers, keys, models and chains the file does not list")

    def handle(self, *args, file: Path, dry_run: bool, prune: bool, **options) -> None:
        report = import_file(file, dry_run=dry_run, prune=prune)
        for line in report.changes:
            self.stdout.write(line)
        if not report.changes:
            self.stdout.write(f"{file}: already up to date, nothing to change")
        elif dry_run:
            self.stdout.write(f"dry run: {len(report.changes)} change(s) would be made; nothing was written")
        else:
            self.stdout.write(self.style.SUCCESS(f"{file}: {len(report.changes)} change(s) applied"))


def import_file(file: Path, *, dry_run: bool = False, prune: bool = False):
    """Load and import one YAML file; every failure becomes a CommandError naming the file."""
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise CommandError(f"{file}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        raise CommandError(f"{file}: the file is empty")
    try:
        return config_import(data=data, prune=prune, dry_run=dry_run)
    except ConfigError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        raise CommandError(f"{file}: invalid config, nothing was changed:\n{lines}") from None
    except DecryptionError as exc:
        raise CommandError(f"{file}: nothing was changed: {exc} (check FREELLM_ENCRYPTION_KEYS)") from None
