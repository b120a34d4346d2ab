"""Staff in a real browser: "Discover models" on a provider page adds a model the provider lists today, and
"Import keys" recognises a pasted .env, previews it masked and adds the providers with tested keys."""

from __future__ import annotations

import pytest

STAFF_PASSWORD = "staff-browser-pw"


@pytest.fixture
def staff(live_admin, django_user_model):
    from routing.services import STAFF_GROUP, team_groups_sync

    user = django_user_model.objects.create_user("stella", password=STAFF_PASSWORD, is_staff=True)
    user.groups.add(team_groups_sync()[STAFF_GROUP])
    return user


@pytest.fixture
def groq(live_admin, emulator):
    from providers.models import Provider
    from providers.services_catalog import provider_add_from_catalog

    provider_add_from_catalog(slug="groq", keys=["gsk_browser-seed"], base_url=emulator.base_url("groq"),
                              test_keys=False)
    return Provider.objects.get(slug="groq")


def test_staff_discovers_and_adds_a_new_model(staff, groq, emulator, page, log_in, orm):
    from playwright.sync_api import expect

    from providers.models import UpstreamModel

    emulator.engine.models["groq"] = [
        {"id": "brand-new-model", "context_window": 32768, "supported_parameters": ["tools"]},
        {"id": "llama-3.1-8b-instant"},
    ]
    log_in("stella", STAFF_PASSWORD)
    page.goto(f"/admin/providers/provider/{groq.pk}/change/")
    page.get_by_role("button", name="Discover models").click()

    expect(page.locator("#discovery-summary")).to_contain_text("2 model(s) listed (asked with key groq-1)")
    row = page.locator("tr.new-model", has_text="brand-new-model")
    expect(row).to_contain_text("32768")
    expect(page.locator("#gone-models")).to_contain_text("openai/gpt-oss-120b")
    assert "gsk_browser-seed" not in page.content()

    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Add / update selected").click()
    expect(page.locator(".messagelist")).to_contain_text("Added 1 model(s)")
    added = orm(lambda: UpstreamModel.objects.filter(model_id="brand-new-model").values_list(
        "context_window", "supports_tools").first())
    assert added == (32768, True)
    assert orm(lambda: UpstreamModel.objects.get(model_id="brand-new-model").chain_entries.count()) == 0


def test_staff_imports_a_pasted_env(staff, groq, emulator, page, log_in, orm):
    from playwright.sync_api import expect

    from providers.models import ProviderKey

    log_in("stella", STAFF_PASSWORD)
    page.goto("/admin/providers/provider/")
    page.get_by_role("link", name="Import keys").click()
    page.get_by_label("Paste a .env block or keys").fill(
        "# team keys\nGROQ_API_KEY=gsk_browser-good-1234\nGROQ_API_KEY_2=gsk_browser-bad-5678;401\nDEBUG=1\n"
    )
    page.get_by_role("button", name="Preview").click()

    preview = page.locator("#import-preview")
    expect(preview.locator("tr.preview-key")).to_have_count(2)
    expect(preview).to_contain_text("…1234")
    expect(page.locator("#unrecognised")).to_contain_text("line 4: DEBUG")
    assert "gsk_browser-good-1234" not in page.content()
    assert orm(lambda: ProviderKey.objects.count()) == 1  # the preview wrote nothing

    page.get_by_role("button", name="Add 2 key(s) to 1 provider(s)").click()
    result = page.locator("#import-result")
    expect(result.locator("tr.import-key")).to_have_count(2)
    expect(result.locator("tr.import-key", has_text="…1234")).to_contain_text("works")
    expect(result.locator("tr.import-key", has_text="…;401")).to_contain_text("rejected")
    assert "gsk_browser-good-1234" not in page.content()
    statuses = orm(lambda: sorted((k.secret[-4:], k.status) for k in ProviderKey.objects.all()))
    assert statuses == [("1234", "active"), (";401", "invalid"), ("seed", "unknown")]
