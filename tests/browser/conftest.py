"""The real-browser suite: Debian's chromium driven by Playwright against the live gateway (admin included).

Playwright's sync API runs in the test's own thread; the server under test is the `gateway` fixture's, on a
real socket in its own thread. While the browser is open, Playwright's event loop counts as running in the
test's thread (it drives it from a greenlet), so Django refuses ORM calls there ("You cannot call this from
an async context"). Hence: `browser` is set up after the live server and its database (and torn down
before them), fixtures that write test data must come before `page` in a test's arguments, and a test
that reads the database while the browser is open does it through `orm(...)`, which runs in another
thread. Playwright is started and stopped per test so no loop of its outlives a test.
No browser is downloaded: `executable_path` is the distribution's chromium (`apt-get install chromium`,
which .ci/run does on a fresh machine). Without it these tests skip, or fail when
FREELLM_REQUIRE_SERVICES is set (CI).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REQUIRE_SERVICES

CHROMIUM = Path(os.environ.get("FREELLM_CHROMIUM", "/usr/bin/chromium"))
# Long enough for a loaded 2-core CI machine, short enough that a missing element fails fast.
TIMEOUT_MS = 15_000


def _need_browser() -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; FREELLM_REQUIRE_SERVICES is set: CI must run the browser suite")
    pytest.skip(f"{reason}: the browser suite needs it")


@pytest.fixture
def browser(live_admin):
    """A headless chromium for this test only, started after the live server and its database."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def live_admin(gateway, settings):
    """The `gateway` fixture's live server (it serves freellm.asgi, the admin included), with its URL as
    FREELLM_PUBLIC_URL so that the snippets the pages show point at it."""
    settings.FREELLM_PUBLIC_URL = gateway.url
    return gateway


@pytest.fixture
def page(browser, live_admin):
    """A fresh browser context (no cookies) on the live admin, allowed to use the clipboard."""
    context = browser.new_context(base_url=live_admin.url, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_admin.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def orm():
    """Run a database read or write while the browser is open: `orm(lambda: ApiKey.objects.count())`."""
    with ThreadPoolExecutor(max_workers=1) as pool:

        def run(fn):
            return pool.submit(fn).result()

        yield run
        # Worker-thread connections are not the test's: close them before the database is flushed.
        pool.submit(__import__("django.db").db.connections.close_all).result()


@pytest.fixture
def member(live_admin, django_user_model):
    """`alice` (who owns the gateway fixture's key) as a team member who can log in to the admin."""
    from routing.models import ApiKey
    from routing.services import MEMBERS_GROUP, team_groups_sync

    alice = django_user_model.objects.get(username="alice")
    password = "alice-browser-pw"
    alice.set_password(password)
    alice.is_staff = True
    alice.save()
    alice.groups.add(team_groups_sync()[MEMBERS_GROUP])
    return SimpleNamespace(user=alice, username="alice", password=password,
                           key=ApiKey.objects.get(user=alice), raw_key=live_admin.api_key)  # fmt: skip


@pytest.fixture
def log_in(page):
    """Log in through the admin's login form, as a person would."""

    def log_in(username: str, password: str) -> None:
        page.goto("/admin/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/admin/")

    return log_in
