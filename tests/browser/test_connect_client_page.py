"""A member sets up Claude Code from the admin's *Connect a client* page, in a real browser."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

SCREENSHOT = Path(os.environ.get("FREELLM_SCREENSHOT_DIR", tempfile.gettempdir())) / "freellm-connect-client.png"


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

    page.screenshot(path=str(SCREENSHOT), full_page=True)
