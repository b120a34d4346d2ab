"""A member tries a chain from the admin's playground in a real browser: the answer streams in, then the trail."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.fixtures_gateway import add_chain, add_provider

SCREENSHOTS = Path(os.environ.get("FREELLM_SCREENSHOT_DIR", tempfile.gettempdir()))


@pytest.fixture
def chain(live_admin, emulator):
    """`auto`: groq (rate-limited: a 429 in the trail) then gemini, whose answer comes in paced chunks."""
    add_provider(emulator, "groq", ["g;429=60"], ["llama"])
    add_provider(emulator, "gemini", ["ok;gap=0.15"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])


def test_member_sends_a_prompt_and_sees_it_stream_with_the_trail(member, chain, emulator, page, log_in, orm):
    from playwright.sync_api import expect

    from analytics.models import RequestLog
    from tests.polling import wait_until

    log_in(member.username, member.password)
    page.get_by_role("link", name="Playground").first.click()
    expect(page).to_have_title(re.compile("^Playground"))
    expect(page.get_by_label("Chain or model")).to_have_value("auto")
    expect(page.get_by_label("Stream the answer")).to_be_checked()

    page.get_by_label("System prompt (optional)").fill("Answer briefly.")
    page.get_by_label("Prompt", exact=True).fill("hello from the browser")
    page.get_by_role("button", name="Send").click()

    answer = page.locator("#fl-answer")
    status = page.locator("#fl-status")
    # Part of the answer is there while the rest is still coming.
    expect(status).to_have_text("Streaming…")
    expect(answer).not_to_be_empty()
    expect(status).to_have_text("Done")
    expect(answer).to_have_text("Echo: hello from the browser")

    # The trail: groq refused (429), gemini answered.
    trail = page.locator("#fl-trail tbody tr")
    expect(trail).to_have_count(2)
    expect(trail.nth(0)).to_contain_text("groq/llama/groq-0")
    expect(trail.nth(0)).not_to_contain_text("ok")
    expect(trail.nth(1)).to_contain_text("gemini/flash/gemini-0")
    expect(trail.nth(1)).to_contain_text("ok")
    summary = page.locator("#fl-summary")
    expect(summary).to_contain_text("gemini / flash")
    expect(summary).to_contain_text(re.compile(r"\d+ prompt \+ \d+ completion = \d+"))
    expect(summary).to_contain_text(re.compile(r"\d+ ms at the gateway"))
    headers = page.locator("#fl-headers")
    expect(headers).to_contain_text("x-freellm-provider")
    expect(headers).to_contain_text("x-freellm-trail")
    request_id = page.locator("#fl-summary tr", has_text="request id").locator("td").text_content()

    # In the request log as the member's, from the playground, with the system prompt sent upstream.
    def logged():
        return RequestLog.objects.filter(request_id=request_id).values_list("user__username", "dialect").first()

    assert orm(lambda: wait_until(logged)) == ("alice", "playground")
    assert emulator.calls_for(provider="gemini")[-1].body["messages"][0] == {"role": "system",
                                                                              "content": "Answer briefly."}

    page.screenshot(path=str(SCREENSHOTS / "freellm-playground.png"), full_page=True)
