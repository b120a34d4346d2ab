"""Update catalog-added providers and their models from providers/catalog/*.yaml.

Shows what would change by default (a dry run); ``--apply`` writes it. Keys are never touched and fields
edited in the admin on purpose are kept (listed with ``=``).

``--discover [PROVIDER ...]`` asks configured providers (default: every enabled one) for their live model
list instead, with one key each, and shows new (+), gone (-) and changed (~) models; ``--apply`` then
adds the new models and stores the stated capabilities. Discovered models join no chain.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from providers.catalog import CatalogError
from providers.models import Provider
from providers.services_catalog import catalog_sync
from providers.services_discovery import provider_models_apply, provider_models_discover


class Command(BaseCommand):
    help = "Show (default) or --apply the differences between the provider catalog and the database."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "slugs", nargs="*", help="only these providers (default: every one added from the catalog)"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", action="store_true", help="only show what would change (the default)")
        mode.add_argument("--apply", action="store_true", help="write the changes")
        parser.add_argument(
            "--discover",
            action="store_true",
            help="compare with each provider's live model list (GET /models or its native list) instead of the catalog",
        )

    def handle(self, *args, slugs: list[str], apply: bool, discover: bool, verbosity: int, **options) -> None:
        if discover:
            self._discover(slugs, apply=apply)
            return
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

    def _discover(self, slugs: list[str], *, apply: bool) -> None:
        providers = Provider.objects.order_by("slug")
        if slugs:
            providers = providers.filter(slug__in=slugs)
            if unknown := set(slugs) - set(providers.values_list("slug", flat=True)):
                raise CommandError(f"no such provider: {', '.join(sorted(unknown))}")
        else:
            providers = providers.filter(enabled=True)
        failed = 0
        for provider in providers:
            result = provider_models_discover(provider=provider)
            if not result.ok:
                failed += 1
                self.stderr.write(self.style.ERROR(f"! {provider.slug}: {result.detail}"))
                continue
            self.stderr.write(f"{provider.slug}: {result.detail}")
            for line in result.lines():
                self.stdout.write(line)
            if apply:
                report = provider_models_apply(result=result)
                self.stdout.write(self.style.SUCCESS(
                    f"{provider.slug}: added {len(report.added)} model(s), updated {len(report.updated)}"
                    " (added models join no chain)"
                ))
            elif result.new or result.changed:
                self.stdout.write(f"{provider.slug}: {len(result.new)} new, {len(result.changed)} changed, "
                                  f"{len(result.gone)} gone; run with --apply to add and update")
            else:
                self.stdout.write(self.style.SUCCESS(f"{provider.slug}: the database matches the provider's list"
                                                     + (f" ({len(result.gone)} gone)" if result.gone else "")))
        if failed:
            raise CommandError(f"discovery failed for {failed} provider(s)")
