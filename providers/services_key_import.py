"""Bulk key import: a pasted ``.env`` block (or bare keys, one per line) → catalog providers with their keys.

``key_import_preview`` reads the text (python-dotenv's parser, so quoting, ``export`` and comments behave
as in a real .env) and recognises each line's provider from the catalog's recognisers: the variable name
(``key_env``, e.g. GROQ_API_KEY, also with a numeric suffix such as GROQ_API_KEY_2) or the key's own
prefix (``key_prefix``, e.g. ``gsk_``). A name and a prefix that point at different providers, a value
nobody claims, or a Cloudflare token without its account id are listed as unrecognised, never guessed.
Nothing is written by the preview and no secret is in it (masked only).

``key_import_apply`` adds each recognised provider from the catalog (``provider_add_from_catalog``) with
its keys and, unless told not to, tests every key with one cheap call (the key test service).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from django.views.decorators.debug import sensitive_variables
from dotenv.parser import parse_stream

from .catalog import CatalogProvider, catalog_providers
from .models import ProviderKey, mask_secret
from .services_catalog import CatalogAddResult, provider_add_from_catalog

_NUMBERED = re.compile(r"^(?P<base>[A-Z][A-Z0-9_]*?)_?\d+$")


@dataclass(frozen=True)
class KeyCandidate:
    slug: str
    provider_name: str
    line: int
    source: str  # the variable name, or "" for a bare key
    recognised_by: str  # e.g. "variable GROQ_API_KEY" or "prefix gsk_"
    masked: str
    already_stored: bool
    secret: str = field(repr=False, compare=False)


@dataclass(frozen=True)
class UnrecognisedLine:
    line: int
    source: str  # the variable name, or the masked value of a bare line
    reason: str


@dataclass
class ImportPreview:
    candidates: list[KeyCandidate] = field(default_factory=list)
    unrecognised: list[UnrecognisedLine] = field(default_factory=list)

    def by_provider(self) -> dict[str, list[KeyCandidate]]:
        grouped: dict[str, list[KeyCandidate]] = {}
        for candidate in self.candidates:
            grouped.setdefault(candidate.slug, []).append(candidate)
        return grouped

    def lines(self) -> list[str]:
        out = []
        for slug, items in self.by_provider().items():
            for item in items:
                stored = " (already stored)" if item.already_stored else ""
                where = item.source or f"line {item.line}"
                out.append(f"+ {slug}: {item.masked} from {where}, by {item.recognised_by}{stored}")
        for line in self.unrecognised:
            out.append(f"? line {line.line}: {line.source}: {line.reason}")
        return out


@dataclass(frozen=True)
class ProviderImport:
    slug: str
    result: CatalogAddResult | None
    error: str = ""


class _Recognisers:
    def __init__(self, providers: list[CatalogProvider]) -> None:
        self.by_slug = {p.slug: p for p in providers}
        self.by_env = {name: p for p in providers for name in p.key_env}
        self.account_env = {name: p for p in providers for name in p.key_account_env}
        # Longest first, so a longer prefix wins over a shorter one of another provider.
        self.prefixes = sorted(((prefix, p) for p in providers for prefix in p.key_prefix), key=lambda x: -len(x[0]))

    def by_name(self, name: str) -> CatalogProvider | None:
        if name in self.by_env:
            return self.by_env[name]
        numbered = _NUMBERED.match(name)
        return self.by_env.get(numbered.group("base")) if numbered else None

    def by_prefix(self, value: str) -> tuple[str, CatalogProvider] | None:
        return next(((prefix, p) for prefix, p in self.prefixes if value.startswith(prefix)), None)


@sensitive_variables("text", "value", "values", "secret", "bindings", "accounts")
def key_import_preview(*, text: str) -> ImportPreview:
    """What importing ``text`` would add (see the module docstring); writes nothing."""
    recognisers = _Recognisers(catalog_providers())
    preview = ImportPreview()
    bindings = [b for b in parse_stream(io.StringIO(text)) if b.key is not None or b.error]
    accounts: dict[str, str] = {}
    for binding in bindings:
        if binding.key and binding.value and binding.key in recognisers.account_env:
            accounts.setdefault(recognisers.account_env[binding.key].slug, binding.value.strip())
    stored = {(k.provider.slug, k.secret) for k in ProviderKey.objects.select_related("provider")}
    seen: set[tuple[str, str]] = set()
    for binding in bindings:
        line = binding.original.line
        if binding.error:
            preview.unrecognised.append(UnrecognisedLine(line, "(unreadable)", "not a NAME=value line"))
            continue
        name, value = binding.key, binding.value
        if value is None:
            # A bare line: the whole line is the key.
            name, value = "", binding.key
        value = value.strip()
        if name and name in recognisers.account_env:
            continue  # an account id, joined to its provider's token below
        if not value:
            preview.unrecognised.append(UnrecognisedLine(line, name, "empty value"))
            continue
        label = name or mask_secret(value)
        named = recognisers.by_name(name) if name else None
        prefixed = recognisers.by_prefix(value)
        if named and prefixed and prefixed[1].slug != named.slug:
            preview.unrecognised.append(UnrecognisedLine(
                line, label, f"the name says {named.name} but the key looks like {prefixed[1].name}'s: not guessing"
            ))
            continue
        provider = named or (prefixed[1] if prefixed else None)
        if provider is None:
            why = "no catalog provider uses this variable name or key prefix" if name else "no catalog provider's keys start like this"
            preview.unrecognised.append(UnrecognisedLine(line, label, why))
            continue
        how = f"variable {name}" if named else f"prefix {prefixed[0]}"
        if provider.auth == "cloudflare-account-token" and ":" not in value:
            account = accounts.get(provider.slug)
            if not account:
                wanted = " or ".join(provider.key_account_env) or "an account id"
                preview.unrecognised.append(UnrecognisedLine(line, label, f"{provider.name} needs {wanted} too (or paste account_id:token)"))
                continue
            value = f"{account}:{value}"
            how += " + account id"
        if (provider.slug, value) in seen:
            continue
        seen.add((provider.slug, value))
        preview.candidates.append(KeyCandidate(
            slug=provider.slug, provider_name=provider.name, line=line, source=name, recognised_by=how,
            masked=mask_secret(value), already_stored=(provider.slug, value) in stored, secret=value,
        ))
    return preview


@sensitive_variables("preview", "keys")
def key_import_apply(*, preview: ImportPreview, test_keys: bool = True) -> list[ProviderImport]:
    """Add every provider of ``preview`` from the catalog with its keys (each tested unless ``test_keys``
    is False). A provider that cannot be added is reported and the others still go in."""
    from .catalog import CatalogError

    outcomes = []
    for slug, candidates in preview.by_provider().items():
        keys = [c.secret for c in candidates]
        try:
            outcomes.append(ProviderImport(slug, provider_add_from_catalog(slug=slug, keys=keys, test_keys=test_keys)))
        except CatalogError as exc:
            outcomes.append(ProviderImport(slug, None, str(exc)))
    return outcomes
