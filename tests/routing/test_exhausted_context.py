"""router.exhausted_error on trails where context windows were too small."""

from __future__ import annotations

import pytest

from routing.quota.base import Route
from routing.router import RequestContext, Step, exhausted_error


def ctx_with(*steps: Step) -> RequestContext:
    ctx = RequestContext(kind="chat", requested="auto", est_tokens=9000, context_tokens=7000)
    ctx.trail.extend(steps)
    return ctx


GATED = Step(Route("groq", "llama", "*"), "skipped:context window 4,096 < ~7,000 tokens", False,
             "context too small", window=4096)
REFUSED = Step(Route("mistral", "large", "m1"), "context_length", True, "context too small", window=None)
RATE_LIMITED = Step(Route("gemini", "flash", "g1"), "rate_limited", True, "rate-limited", retry_after=12)
NO_VISION = Step(Route("cohere", "r", "*"), "skipped:no vision", False, "not capable")


def test_all_too_small_is_context_length_exceeded_with_the_gating_estimate():
    error = exhausted_error(ctx_with(GATED, REFUSED))

    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "~7,000 tokens" in error.message
    assert "largest context window of the 2 models checked for 'auto' is 4,096 tokens (groq/llama)" in error.message


@pytest.mark.parametrize(("steps", "status", "code"), [
    ((GATED, RATE_LIMITED), 429, "all_routes_exhausted"),
    ((REFUSED, NO_VISION), 422, "no_capable_model"),
])
def test_other_mixes_keep_their_status(steps, status, code):
    error = exhausted_error(ctx_with(*steps))

    assert (error.status, error.code) == (status, code)
