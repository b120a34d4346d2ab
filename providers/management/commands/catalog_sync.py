"""Update catalog-added providers and their models from providers/catalog/*.yaml.

Shows what would change by default (a dry run); ``--apply`` writes it. Keys are never touched and fields
edited in the admin on purpose are kept (listed with ``=``).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from providers.catalog import CatalogError
from providers.services_catalog import catalog_sync


class Command(BaseCommand):
    help = "Show (default) or --apply the differences between the provider catalog and the database."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "slugs", nargs="*", help="only these providers (default: every one added from the catalog)"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", action="store_true", help="only show what would change (the default)")
        mode.add_argument("--apply", action="store_true", help="write the changes")

    def handle(self, *args, slugs: list[str], apply: bool, verbosity: int, **options) -> None:
        progress = self.stderr.write if verbosity >= 1 else None
        try:
            changes = catalog_sync(apply=apply, slugs=slugs or None, progress=progress)
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        for change in changes:
            self.stdout.write(str(change))
        pending = [c for c in changes if c.action != "kept"]
        kept = len(changes) - len(pending)
        if apply:
            summary = f"applied {len(pending)} change(s); kept {kept} admin edit(s)"
        elif pending:
            summary = f"{len(pending)} change(s) would be made (kept {kept} admin edit(s)); run with --apply to write them"
        else:
            summary = f"up to date with the catalog (kept {kept} admin edit(s))"
        self.stdout.write(self.style.SUCCESS(summary))
