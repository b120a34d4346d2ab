"""The README's providers table, generated from the catalog (``manage.py catalog_table``)."""

from __future__ import annotations

from collections.abc import Iterable

from . import CatalogModel, CatalogProvider

START_MARKER = "<!-- providers-table -->"
END_MARKER = "<!-- /providers-table -->"

_AUTH = {
    "bearer": "Bearer key",
    "x-goog-api-key": "`x-goog-api-key`",
    "cloudflare-account-token": "`account_id:token`",
    "apikey-header": "`apikey` header",
    "none": "none",
}
_OTHER_KINDS = ("embedding", "image", "transcription", "speech")


INTRO = (
    "Generated from `providers/catalog/*.yaml` by `python manage.py catalog_table` (do not edit by hand). "
    "To use one, open Providers → **Add from catalog** in the admin, pick it and paste keys (one per line; "
    "each is checked with one real, cheap call), or paste a whole `.env` in **Import keys** (or run "
    "`python manage.py import_keys .env`): the variable names and key prefixes in the Key column tell "
    "freellm which provider a key is for. **Discover models** on a provider page (or `python manage.py "
    "catalog_sync --discover`) shows what it serves today. A catalog provider's chat models join the `auto` chain "
    "by rank, its embedding "
    "models a chain named after their family. `python manage.py catalog_sync` shows what a newer catalog "
    "would change and `--apply` writes it, leaving keys and admin edits alone. Limits are the documented "
    "free-tier figures on the date checked; the gateway also learns tighter ones from rate-limit headers "
    "and 429s."
)


def readme_section(providers: Iterable[CatalogProvider]) -> str:
    """What goes between the README markers: a short explanation and the table."""
    return f"{INTRO}\n\n{providers_table(providers)}"


def providers_table(providers: Iterable[CatalogProvider]) -> str:
    """A Markdown table: one row per provider, its free models and documented limits."""
    lines = [
        "| Provider | Wire format | Key | Free chat models (per-key limits: rpm / rpd / tpm / tpd) "
        "| Embedding, image, audio | Account-wide | Checked |",
        "|---|---|---|---|---|---|---|",
    ]
    for provider in providers:
        key = ("optional (keyless)" if provider.keyless else _AUTH[provider.auth]) + _recognisers(provider)
        chat = "<br>".join(_chat_cell(m) for m in provider.chat_models) or "—"
        other = "<br>".join(_other_cell(m) for m in provider.models if m.kind in _OTHER_KINDS) or "—"
        lines.append(
            f"| [{_escape(provider.name)}]({provider.docs_url}) | {provider.adapter} | {key} | {chat} | {other} "
            f"| {_account_cell(provider)} | {provider.checked.isoformat()} |"
        )
    return "\n".join(lines)


def _recognisers(provider: CatalogProvider) -> str:
    """How bulk import knows the key: its first variable name and its prefix (the key format)."""
    parts = [f"`{provider.key_env[0]}`"] if provider.key_env else []
    parts += [f"`{prefix}…`" for prefix in provider.key_prefix]
    return f"<br>{', '.join(parts)}" if parts else ""


def _chat_cell(model: CatalogModel) -> str:
    limits = model.limits
    figures = [_number(limits.rpm), _number(limits.rpd), _number(limits.tpm), _number(limits.tpd)]
    suffix = "" if figures == ["—"] * 4 else " " + " / ".join(figures)
    return f"`{_escape(model.id)}`{suffix}"


def _other_cell(model: CatalogModel) -> str:
    extra = f", {model.dimensions} dims" if model.dimensions else ""
    return f"`{_escape(model.id)}` ({model.kind}{extra})"


def _account_cell(provider: CatalogProvider) -> str:
    parts = []
    if provider.account_rpm is not None:
        parts.append(f"{provider.account_rpm:,} rpm")
    if provider.account_rpd is not None:
        parts.append(f"{provider.account_rpd:,} rpd")
    reset = f"day resets {provider.daily_reset_tz}" if provider.daily_reset_tz != "UTC" else ""
    return ", ".join(parts + ([reset] if reset else [])) or "—"


def _number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table`` (see ``readme_section``).

    A README without the markers gets a "Supported providers" section at the end; one with only the
    opening marker gets the closing marker right after the table.
    """
    block = f"{START_MARKER}\n{table}\n{END_MARKER}"
    start = readme.find(START_MARKER)
    if start == -1:
        return readme.rstrip("\n") + "\n\n## Supported providers\n\n" + block + "\n"
    end = readme.find(END_MARKER, start)
    tail = readme[end + len(END_MARKER) :] if end != -1 else readme[start + len(START_MARKER) :]
    return readme[:start] + block + tail
