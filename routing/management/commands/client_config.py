from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.clients import AGENTS, DEFAULT_MODEL, client_config, render_text
from routing.models import VISIBLE_PREFIX_LEN
from routing.selectors import api_key_active_by_raw, api_key_prefix_is_active


class Command(BaseCommand):
    help = (
        "Print a ready configuration pointing AGENT at this freellm server (it writes no file). "
        f"Agents: {', '.join(AGENTS)}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("agent", help=f"one of: {', '.join(AGENTS)}")
        parser.add_argument(
            "--key",
            help="your full freellm key (fl-...) to put in the snippet; without it (or given only a key's "
            "visible prefix) the snippet holds a placeholder",
        )
        parser.add_argument(
            "--base-url",
            help=f"the server root clients reach (default FREELLM_PUBLIC_URL: {settings.FREELLM_PUBLIC_URL})",
        )
        parser.add_argument("--model", default=DEFAULT_MODEL, help=f"chain or model to use (default {DEFAULT_MODEL})")

    def handle(self, *args, agent: str, key: str | None, base_url: str | None, model: str, **options) -> None:
        if agent not in AGENTS:
            raise CommandError(f"unknown agent {agent!r}; known agents: {', '.join(AGENTS)}", returncode=2)
        full_key, prefix = self._key(key)
        try:
            config = client_config(
                agent=agent,
                base_url=base_url or settings.FREELLM_PUBLIC_URL,
                key=full_key,
                key_prefix=prefix,
                model=model,
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        self.stdout.write(render_text(config), ending="")

    def _key(self, key: str | None) -> tuple[str | None, str | None]:
        """(full key, visible prefix): a known prefix stands for its key as a placeholder."""
        if not key:
            return None, None
        if len(key) == VISIBLE_PREFIX_LEN and api_key_prefix_is_active(key):
            return None, key
        if api_key_active_by_raw(key) is None:
            # Still printed: the config may be meant for another freellm server (--base-url).
            self.stderr.write("warning: this key is not an active key of this server; clients using it get 401 here")
        return key, None
