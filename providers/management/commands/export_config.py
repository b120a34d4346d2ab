from __future__ import annotations

import os
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandParser

from providers.services import config_export


class Command(BaseCommand):
    help = "Print providers, keys, models and chains as YAML in import_config's format (no secrets by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--with-secrets", action="store_true", help="include decrypted key secrets")
        parser.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")

    def handle(self, *args, with_secrets: bool, output: Path | None, **options) -> None:
        text = yaml.safe_dump(config_export(with_secrets=with_secrets), sort_keys=False, allow_unicode=True)
        if output is None:
            self.stdout.write(text, ending="")
            return
        # With secrets the file holds plaintext keys: create it readable by the owner only.
        mode = 0o600 if with_secrets else 0o644
        with os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as handle:
            handle.write(text)
        self.stderr.write(f"wrote {output}")
