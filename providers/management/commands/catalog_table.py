"""Rewrite the providers table in README.md from providers/catalog/*.yaml (``--check`` only compares)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from providers.catalog import catalog_providers
from providers.catalog.table import readme_section, replace_table


class Command(BaseCommand):
    help = (
        "Regenerate the README providers table (between <!-- providers-table --> markers) from the catalog."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--readme", default=str(Path(settings.BASE_DIR) / "README.md"))
        parser.add_argument(
            "--check", action="store_true", help="exit with an error if the table is out of date"
        )

    def handle(self, *args, readme: str, check: bool, **options) -> None:
        path = Path(readme)
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        current = path.read_text(encoding="utf-8")
        updated = replace_table(current, readme_section(catalog_providers()))
        if updated == current:
            self.stdout.write(f"{path.name}: providers table is up to date")
            return
        if check:
            raise CommandError(
                f"{path.name}: providers table is out of date; run `python manage.py catalog_table`"
            )
        path.write_text(updated, encoding="utf-8")
        self.stdout.write(
            self.style.SUCCESS(
                f"{path.name}: providers table rewritten ({len(catalog_providers())} providers)"
            )
        )
