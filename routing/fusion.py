"""Fusion: a chain with ``strategy: fusion`` answers with a panel of its members, then one answer is made of
theirs.

    panel    the first ``panel`` members of distinct providers, in chain order, that can serve the request
             (capability gating) and have quota left (members without are taken only when too few have it);
             each is asked in parallel through router.execute with a context of its own, so quota,
             breakers and route stats apply to every call and quota is charged for every call
    judge    mode ``judge``: the ``judge`` model (provider/model, or a chain) reads the conversation and the
             drafts that came back and writes the final answer (JUDGE_PROMPT); a stream streams the judge
    best_of  one draft is returned as it is: the judge picks it when there is one (PICK_PROMPT, it answers
             with a number), else the consensus draft: the one sharing the most words with the others
             (mean Jaccard similarity of word sets), finished answers before cut ones, then chain order

A failed panel member only leaves its draft out; a failed judge leaves the consensus draft. The request fails
only when no member answers. The trail (X-FreeLLM-Trail) lists every panel call before the judge's, and a
plain answer carries ``freellm_panel: [{"model", "ok", "ms"}]``. Requests with tools are not fused: a tool
call cannot be merged, so such a request walks the chain in order like ``priority``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from providers.models import FusionMode
from routing import router
from routing.config import ModelInfo, RoutingConfig
from routing.errors import GatewayError
from routing.quota import get_quota_store
from routing.strategies import best_headroom

# attempt_for(ctx, body) → the router attempt function that calls one model with ``body`` for ``ctx``
AttemptFor = Callable[[router.RequestContext, dict], router.AttemptFn]

JUDGE_PROMPT = (
    "You are the judge of a panel of AI assistants. Each of them answered the conversation below on its own. "
    "Write the single best final answer to the user's last message: keep what the drafts get right, correct "
    "what they get wrong, and leave out what they disagree on unless you can settle it. Answer the user "
    "directly, in the language and format they asked for; do not mention the panel, the drafts or yourself."
)
PICK_PROMPT = (
    "You are the judge of a panel of AI assistants. Each of them answered the conversation below on its own. "
    "Reply with only the number of the best draft: the most correct, complete and helpful answer to the "
    "user's last message."
)
# Parameters that make no sense for the judge's own call: it writes text from drafts, it calls no tool.
_NOT_FOR_JUDGE = frozenset({"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "n",
                            "logprobs", "top_logprobs"})


@dataclass(frozen=True)
class Fusion:
    panel: int = 3
    judge: str = ""
    mode: str = FusionMode.JUDGE

    @classmethod
    def of(cls, settings: dict) -> Fusion:
        """From a chain's stored ``fusion`` (validated by providers.config_schema.FusionSpec)."""
        return cls(panel=int(settings.get("panel") or 3), judge=settings.get("judge") or "",
                   mode=settings.get("mode") or (FusionMode.JUDGE if settings.get("judge") else FusionMode.BEST_OF))


@dataclass
class Draft:
    model: ModelInfo
    ctx: router.RequestContext
    served: router.Served | None = None
    error: str = ""
    ms: int = 0

    @property
    def completion(self) -> dict | None:
        return self.served.result.body if self.served is not None else None

    @property
    def text(self) -> str:
        completion = self.completion or {}
        choices = completion.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""

    @property
    def finished(self) -> bool:
        choices = (self.completion or {}).get("choices") or [{}]
        return choices[0].get("finish_reason") in ("stop", None)

    def summary(self) -> dict[str, Any]:
        item: dict[str, Any] = {"model": self.model.name, "ok": self.served is not None, "ms": self.ms}
        if self.error:
            item["error"] = self.error
        return item


@dataclass
class Fused:
    served: router.Served  # the judge's call (plain: done; stream: primed), or the chosen draft's
    completion: dict | None  # plain: the answer, with freellm_panel; stream: None (the judge streams)
    panel: list[dict[str, Any]]


def applies(resolution: router.Resolution, body: dict) -> bool:
    return resolution.strategy == router.Strategy.FUSION and not body.get("tools")


async def fuse(
    *,
    ctx: router.RequestContext,
    cfg: RoutingConfig,
    resolution: router.Resolution,
    body: dict,
    stream: bool,
    plain: AttemptFor,
    streamed: AttemptFor,
    skip: Callable[[ModelInfo], str | None] | None = None,
) -> Fused:
    """Ask the panel, then make one answer. Raises GatewayError when no panel member answers."""
    chain = cfg.chains.get(resolution.chain or "")
    fusion = Fusion.of(chain.fusion if chain else {})
    members = await panel_members(resolution.models, fusion.panel, skip=skip)
    drafts = await asyncio.gather(*(_draft(ctx, member, body, plain) for member in members))
    for draft in drafts:
        ctx.trail.extend(draft.ctx.trail)
    panel = [draft.summary() for draft in drafts]
    answered = [d for d in drafts if d.served is not None and d.text]
    if not answered:
        if not ctx.trail:
            raise router.exhausted_error(ctx)
        raise _panel_failed(ctx, drafts)

    judges: tuple[ModelInfo, ...] = ()
    if fusion.judge:
        try:
            judges = router.resolve(cfg, fusion.judge, "chat").models
        except GatewayError:
            judges = ()  # the judge was removed or disabled since: answered like a failed judge
    if fusion.mode == FusionMode.BEST_OF:
        pick = await _judge_pick(ctx, judges, body, answered, plain) if judges and len(answered) > 1 else None
        chosen = answered[pick] if pick is not None else consensus(answered)
        return _chosen(chosen, panel)
    judge_body = judging_body(body, answered, JUDGE_PROMPT)
    try:
        if stream:
            served = await router.execute(ctx, judges, streamed(ctx, judge_body))
            return Fused(served, None, panel)
        served = await router.execute(ctx, judges, plain(ctx, judge_body))
    except GatewayError:
        # The drafts are answers still: the consensus one rather than an error.
        return _chosen(consensus(answered), panel)
    return Fused(served, {**served.result.body, "freellm_panel": panel}, panel)


async def panel_members(models: Sequence[ModelInfo], size: int, *,
                        skip: Callable[[ModelInfo], str | None] | None = None) -> list[ModelInfo]:
    """Up to ``size`` members of distinct providers, chain order, those with quota left first."""
    store = get_quota_store()
    with_room: list[ModelInfo] = []
    without: list[ModelInfo] = []
    providers: set[str] = set()
    for model in models:
        if model.provider.slug in providers or (skip and skip(model)) or not model.keys:
            continue
        providers.add(model.provider.slug)
        (with_room if await best_headroom(model, store) > 0 else without).append(model)
    return [*with_room, *without][:size]


async def _draft(parent: router.RequestContext, model: ModelInfo, body: dict, plain: AttemptFor) -> Draft:
    ctx = router.RequestContext(kind="chat", requested=model.name, est_tokens=parent.est_tokens,
                                prompt_tokens=parent.prompt_tokens)
    draft = Draft(model, ctx)
    began = time.monotonic()
    try:
        draft.served = await router.execute(ctx, (model,), plain(ctx, body))
        await router.settle(draft.served, draft.served.result.usage, fallback_tokens=ctx.est_tokens)
    except GatewayError as exc:
        draft.error = exc.message
    draft.ms = int((time.monotonic() - began) * 1000)
    return draft


def judging_body(body: dict, drafts: Sequence[Draft], prompt: str) -> dict:
    """The judge's request: the client's parameters, the prompt, then the conversation and the drafts."""
    lines = ["Conversation:"]
    for message in body.get("messages") or ():
        lines.append(f"{message.get('role')}: {_text(message.get('content'))}")
    for number, draft in enumerate(drafts, start=1):
        lines += ["", f"Draft {number}:", draft.text]
    judged = {k: v for k, v in body.items() if k not in _NOT_FOR_JUDGE}
    judged["messages"] = [{"role": "system", "content": prompt}, {"role": "user", "content": "\n".join(lines)}]
    return judged


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


async def _judge_pick(ctx, judges, body, drafts: Sequence[Draft], plain: AttemptFor) -> int | None:
    """The judge's pick (an index into ``drafts``), or None when it did not answer with a draft's number."""
    pick_body = {**judging_body(body, drafts, PICK_PROMPT), "max_tokens": 16}
    pick_body.pop("response_format", None)
    try:
        served = await router.execute(ctx, judges, plain(ctx, pick_body))
    except GatewayError:
        return None
    await router.settle(served, served.result.usage, fallback_tokens=ctx.est_tokens)
    return parse_pick(Draft(served.model, ctx, served).text, len(drafts))


def parse_pick(text: str, count: int) -> int | None:
    """The first number in ``text`` that names a draft (1-based) → its index."""
    for match in re.finditer(r"\d+", text):
        number = int(match.group())
        if 1 <= number <= count:
            return number - 1
    return None


def consensus(drafts: Sequence[Draft]) -> Draft:
    """The draft closest to the others (mean Jaccard similarity of word sets); finished ones first, then order."""
    words = [set(re.findall(r"\w+", draft.text.lower())) for draft in drafts]

    def agreement(i: int) -> float:
        others = [j for j in range(len(drafts)) if j != i]
        if not others:
            return 0.0
        return sum(len(words[i] & words[j]) / (len(words[i] | words[j]) or 1) for j in others) / len(others)

    best = min(range(len(drafts)), key=lambda i: (not drafts[i].finished, -agreement(i), i))
    return drafts[best]


def _chosen(draft: Draft, panel: list[dict]) -> Fused:
    return Fused(draft.served, {**draft.completion, "freellm_panel": panel}, panel)


def _panel_failed(ctx: router.RequestContext, drafts: Sequence[Draft]) -> GatewayError:
    error = router.exhausted_error(ctx)
    if all(d.served is not None for d in drafts):
        # Every member answered, with nothing to judge (no text): an upstream failure all the same.
        return GatewayError(502, "no panel member answered with text", code="upstream_error")
    return error
