"""Bulk key import: a pasted .env recognised by variable name or key prefix (catalog recognisers),
previewed masked, unrecognised lines listed, keys tested with one real call (the emulator), from the
admin page and from manage.py import_keys."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from providers.catalog import CatalogError, load_catalog
from providers.models import Provider, ProviderKey
from providers.services_catalog import provider_add_from_catalog
from providers.services_key_import import key_import_apply, key_import_preview


def _key(secret: str) -> ProviderKey:
    # Secrets are encrypted at rest, so they cannot be filtered on in SQL.
    [key] = [k for k in ProviderKey.objects.all() if k.secret == secret]
    return key


ENV = """\
# my keys
export GROQ_API_KEY=gsk_groqsecret0001
OPENROUTER_API_KEY="sk-or-v1-routersecret0002"
GROQ_API_KEY_2=gsk_groqsecret0003
nvapi-barekeysecret0004
DEBUG=true
MISTRAL_API_KEY=gsk_lookslikegroq0005
CLOUDFLARE_ACCOUNT_ID=acct42
CLOUDFLARE_API_TOKEN=cftokensecret0006
some-random-token-0007
"""


@pytest.mark.django_db
def test_preview_recognises_by_name_and_prefix_and_never_guesses():
    preview = key_import_preview(text=ENV)
    found = [(c.slug, c.recognised_by, c.masked, c.line) for c in preview.candidates]
    assert found == [
        ("groq", "variable GROQ_API_KEY", "…0001", 2),
        ("openrouter", "variable OPENROUTER_API_KEY", "…0002", 3),
        ("groq", "variable GROQ_API_KEY_2", "…0003", 4),
        ("nvidia", "prefix nvapi-", "…0004", 5),
        ("cloudflare", "variable CLOUDFLARE_API_TOKEN + account id", "…0006", 9),
    ]
    assert preview.candidates[-1].secret == "acct42:cftokensecret0006"
    unrecognised = {(u.line, u.source): u.reason for u in preview.unrecognised}
    assert unrecognised[(6, "DEBUG")].startswith("no catalog provider uses this variable name")
    assert "not guessing" in unrecognised[(7, "MISTRAL_API_KEY")]
    assert unrecognised[(10, "…0007")] == "no catalog provider's keys start like this"
    text = "\n".join(preview.lines())
    for secret in ("groqsecret0001", "routersecret0002", "barekeysecret0004", "cftokensecret0006", "random-token"):
        assert secret not in text
    assert not Provider.objects.exists()  # a preview writes nothing


@pytest.mark.django_db
def test_a_cloudflare_token_without_its_account_id_is_not_guessed():
    [line] = key_import_preview(text="CLOUDFLARE_API_TOKEN=tok123456789").unrecognised
    assert "needs CLOUDFLARE_ACCOUNT_ID or CF_ACCOUNT_ID" in line.reason


@pytest.mark.django_db
def test_apply_adds_catalog_providers_with_their_keys_untested():
    outcomes = key_import_apply(preview=key_import_preview(text=ENV), test_keys=False)
    assert [o.slug for o in outcomes] == ["groq", "openrouter", "nvidia", "cloudflare"]
    assert sorted(ProviderKey.objects.filter(provider__slug="groq").values_list("secret", flat=True)) == [
        "gsk_groqsecret0001", "gsk_groqsecret0003"
    ]
    assert Provider.objects.get(slug="groq").models.exists()  # from the catalog, with its models
    assert ProviderKey.objects.get(provider__slug="cloudflare").secret == "acct42:cftokensecret0006"
    # Importing the same paste again stores nothing twice.
    again = key_import_preview(text=ENV)
    assert all(c.already_stored for c in again.candidates)
    key_import_apply(preview=again, test_keys=False)
    assert ProviderKey.objects.filter(provider__slug="groq").count() == 2


@pytest.mark.django_db
def test_each_key_is_tested_with_one_real_call(emulator):
    # The provider points at the emulator (an admin's base URL edit, which the import keeps).
    provider_add_from_catalog(slug="groq", keys=["gsk_first-good"], base_url=emulator.base_url("groq"), test_keys=False)
    [outcome] = key_import_apply(preview=key_import_preview(text="GROQ_API_KEY=gsk_second-bad;401\ngsk_third-good"))
    checks = {c.masked: c.ok for c in outcome.result.keys}
    assert checks == {"…;401": False, "…good": True}
    assert _key("gsk_second-bad;401").status == ProviderKey.Status.INVALID
    assert {c.key for c in emulator.calls_for(provider="groq", path="/chat/completions")} == {
        "gsk_second-bad;401", "gsk_third-good"
    }


def test_the_catalog_refuses_a_prefix_or_variable_two_providers_claim(tmp_path):
    from providers.catalog import CATALOG_DIR

    for slug in ("groq", "mistral"):
        (tmp_path / f"{slug}.yaml").write_text((CATALOG_DIR / f"{slug}.yaml").read_text())
    mistral = tmp_path / "mistral.yaml"
    mistral.write_text(mistral.read_text().replace("key_env: [MISTRAL_API_KEY]", "key_env: [GROQ_API_KEY]\nkey_prefix: [gsk_x]"))
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert "key_env: 'GROQ_API_KEY' is already groq's" in str(caught.value)
    assert "'gsk_' is also the start of mistral's 'gsk_x'" in str(caught.value)


@pytest.mark.django_db
def test_command_dry_run_prints_the_preview_and_writes_nothing(tmp_path):
    env = tmp_path / ".env"
    env.write_text(ENV)
    out = io.StringIO()
    call_command("import_keys", str(env), "--dry-run", stdout=out)
    text = out.getvalue()
    assert "+ groq: …0001 from GROQ_API_KEY, by variable GROQ_API_KEY" in text
    assert "? line 6: DEBUG:" in text and "dry run: nothing written" in text
    assert "groqsecret" not in text
    assert not Provider.objects.exists() and not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_command_imports_and_tests(tmp_path, emulator):
    provider_add_from_catalog(slug="groq", keys=["gsk_seed"], base_url=emulator.base_url("groq"), test_keys=False)
    env = tmp_path / ".env"
    env.write_text("GROQ_API_KEY=gsk_cmd-good\n")
    out = io.StringIO()
    call_command("import_keys", str(env), stdout=out)
    assert "groq-2 …good: works: OK: groq/" in out.getvalue()
    out = io.StringIO()
    call_command("import_keys", str(env), "--no-test", stdout=out)
    assert "(already stored): not confirmed: not tested" in out.getvalue()
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_keys", str(tmp_path / "missing.env"))


@pytest.fixture
def staff_client(client, team):
    client.force_login(team.staff)
    return client


@pytest.mark.django_db
def test_admin_page_previews_masked_then_imports_on_confirm(staff_client, emulator):
    provider_add_from_catalog(slug="groq", keys=["gsk_seed"], base_url=emulator.base_url("groq"), test_keys=False)
    url = "/admin/providers/provider/import-keys/"
    assert f'href="{url}"' in staff_client.get("/admin/providers/provider/").content.decode()

    page = staff_client.post(url, {"text": "GROQ_API_KEY=gsk_admin-good\nWHAT=ever-value-123"}).content.decode()
    assert 'id="import-preview"' in page and "…good" in page and "line 2: WHAT" in page
    assert "gsk_admin-good" not in page and "ever-value-123" not in page
    assert ProviderKey.objects.filter(provider__slug="groq").count() == 1
    sealed = page.split('name="sealed" value="')[1].split('"')[0]

    page = staff_client.post(url, {"action": "import", "sealed": sealed, "test": "on"}).content.decode()
    assert 'id="import-result"' in page and "works" in page and "gsk_admin-good" not in page
    assert _key("gsk_admin-good").status == ProviderKey.Status.ACTIVE

    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    page = staff_client.post(url, {"action": "import", "sealed": tampered}, follow=True).content.decode()
    assert "expired or was altered" in page


@pytest.mark.django_db
def test_members_cannot_import_keys(client, team):
    client.force_login(team.alice)
    assert client.post("/admin/providers/provider/import-keys/", {"text": "GROQ_API_KEY=gsk_x"}).status_code in (302, 403)
    assert not ProviderKey.objects.exists()
