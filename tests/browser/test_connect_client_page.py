"""A member sets up Claude Code from the admin's *Connect a client* page, in a real browser."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

SCREENSHOTS = Path(os.environ.get("FREELLM_SCREENSHOT_DIR", tempfile.gettempdir()))


def test_member_copies_the_claude_code_snippet_for_their_key(member, live_admin, page, log_in, orm):
    from playwright.sync_api import expect

    log_in(member.username, member.password)

    # From the admin index, as a member finds it.
    page.get_by_role("link", name="Connect a client").first.click()
    expect(page).to_have_title(re.compile("^Connect a client"))

    # Their own key, by its visible prefix only.
    key_select = page.get_by_label("Your key")
    expect(key_select).to_have_value(member.key.prefix)
    expect(key_select.locator("option")).to_have_text([f"{member.key.prefix}… (test)"])

    # A new choice shows its snippet at once: first another tool, then Claude Code.
    page.get_by_label("Tool").select_option("codex")
    expect(page.locator("#fl-config-title")).to_have_text("OpenAI Codex CLI")
    expect(page.locator("pre").first).to_contain_text('wire_api = "responses"')
    page.get_by_label("Tool").select_option("claude-code")
    expect(page.locator("#fl-config-title")).to_have_text("Claude Code")
    assert "agent=claude-code" in page.url and f"key={member.key.prefix}" in page.url

    shell = page.locator("pre").first
    expect(shell).to_contain_text(f"export ANTHROPIC_BASE_URL={live_admin.url}")
    expect(shell).to_contain_text(f"export ANTHROPIC_AUTH_TOKEN={member.key.prefix}...")
    assert member.raw_key not in page.content()

    # Copy puts exactly the block's text on the clipboard, and it is a shell script bash accepts.
    # (Located by what it copies: its name changes to "Copied".)
    copy = page.locator("button.fl-copy[data-copy='fl-block-1']")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == shell.text_content()
    assert subprocess.run(["bash", "-n"], input=copied, text=True).returncode == 0
    exports = dict(shlex.split(line)[1].split("=", 1) for line in copied.splitlines())
    assert exports["ANTHROPIC_BASE_URL"] == live_admin.url
    assert exports["ANTHROPIC_MODEL"] == "auto"

    # Showing snippets created nothing: the member still has exactly their one key.
    assert orm(lambda: member.user.api_keys.count()) == 1

    page.screenshot(path=str(SCREENSHOTS / "freellm-connect-client.png"), full_page=True)


def test_member_makes_a_new_key_for_codex_and_the_copied_key_works(member, live_admin, page, log_in, orm):
    import tomllib

    import httpx
    from playwright.sync_api import expect

    log_in(member.username, member.password)
    page.goto("/admin/routing/apikey/connect/?agent=codex")
    page.get_by_role("button", name="New key for OpenAI Codex CLI").click()
    expect(page.locator("#fl-new-key")).to_contain_text("will not be shown again")

    # The TOML points at the live server's OpenAI base; the shell block holds the new key in full.
    config = tomllib.loads(page.locator("pre").nth(0).text_content())
    assert config["model_providers"]["freellm"]["base_url"] == f"{live_admin.url}/v1"
    copy = page.locator("button.fl-copy[data-copy='fl-block-2']")
    copy.click()
    expect(copy).to_have_text("Copied")
    (line,) = page.evaluate("navigator.clipboard.readText()").splitlines()
    name, _, new_key = shlex.split(line)[1].partition("=")
    assert name == config["model_providers"]["freellm"]["env_key"]

    # It is a working key of this member's: the gateway accepts it.
    assert orm(lambda: member.user.api_keys.filter(name="OpenAI Codex CLI").count()) == 1
    answer = httpx.get(f"{live_admin.url}/v1/models", headers={"Authorization": f"Bearer {new_key}"})
    assert answer.status_code == 200, answer.text
    page.screenshot(path=str(SCREENSHOTS / "freellm-connect-client-new-key.png"), full_page=True)
