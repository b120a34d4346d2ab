"""Conversation continuity for chat requests: gating, stickiness and context handoff around the router.

    plan = await chat_plan(body=..., headers=..., api_key_id=..., resolution=..., requested=...)  # 422?
    served = await router.execute(ctx, plan.resolution.models, <call with plan.body_for(target)>,
                                  skip=plan.skip)
    await plan.settle(ctx, served)        # binds / touches / switches the session; sets ctx.switched

Order of the models: the session's sticky model first, then the rest of the chain in its own order. An
explicit provider/model (or bare model id) bypasses stickiness. A sticky model no longer in the chain is
forgotten. When another model than the sticky one answers, it is told so by one handoff system message
(FREELLM_CONTEXT_HANDOFF) and the switch is recorded with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from django.conf import settings

from routing.errors import GatewayError
from routing.gating import (
    Requirements,
    chat_requirements,
    context_overflow_error,
    model_can_serve,
    no_capable_model_message,
    too_small,
)
from routing.handoff import build_handoff
from routing.router import StepGroup
from routing.sessions import SessionSource, StickySession, get_session_store, session_key
from routing.signals import session_served

if TYPE_CHECKING:
    from providers.adapters.base import Target
    from routing.config import ModelInfo
    from routing.router import RequestContext, Resolution, Served

log = logging.getLogger(__name__)

SWITCH_HEADER = "X-FreeLLM-Switched"


@dataclass
class ChatPlan:
    body: dict[str, Any]
    resolution: Resolution  # the sticky model first
    requirements: Requirements
    session_key: str = ""  # "" when stickiness does not apply (explicit model)
    session_source: str = ""
    api_key_id: int | None = None
    sticky: StickySession | None = None
    _handoffs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def skip(self, model: ModelInfo) -> str | None:
        return model_can_serve(model, self.requirements)

    def body_for(self, target: Target) -> dict[str, Any]:
        """The upstream request for this target: with a handoff message when it takes the session over."""
        sticky = self.sticky
        if sticky is None or (target.provider, target.model) == (sticky.provider, sticky.model):
            return self.body
        if not settings.FREELLM_CONTEXT_HANDOFF:
            return self.body
        name = f"{target.provider}/{target.model}"
        if name not in self._handoffs:
            model = next((m for m in self.resolution.models if m.name == name), None)
            asked = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
            reserve = asked if isinstance(asked, int) and asked > 0 else settings.FREELLM_OUTPUT_RESERVE
            messages = build_handoff(
                self.body["messages"],
                previous_model=sticky.route_name,
                new_model=name,
                context_window=model.context_window if model else None,
                reserve_tokens=reserve,
            )
            self._handoffs[name] = {**self.body, "messages": messages}
        return self._handoffs[name]

    async def settle(self, ctx: RequestContext, served: Served) -> None:
        """After a successful answer: bind, touch or switch the session and mirror it to the admin."""
        if not self.session_key:
            return
        ctx.session_id = self.session_key
        store = get_session_store()
        provider, model = served.model.provider.slug, served.model.model_id
        reason = ""
        if self.sticky is None:
            session = await store.set(self.session_key, provider=provider, model=model)
        elif (self.sticky.provider, self.sticky.model) == (provider, model):
            session = self.sticky  # touched when it was read (chat_plan)
        else:
            session = await store.record_switch(self.session_key, provider=provider, model=model)
            reason = switch_reason(ctx, self.sticky)
            ctx.switched = f"{self.sticky.route_name} → {served.model.name}: {reason}"
            log.info("session %s… switched %s", self.session_key[:12], ctx.switched)
        # The admin's mirror of sessions belongs to analytics, which listens (routing imports nothing above it).
        session_served.send(
            sender=None,
            key=self.session_key,
            source=self.session_source,
            api_key_id=self.api_key_id,
            provider=session.provider,
            model=session.model,
            switches=session.switches,
            created=session.created,
            last_used=session.last_used,
            switch_reason=ctx.switched if reason else "",
        )


async def chat_plan(
    *,
    body: dict[str, Any],
    headers: Mapping[str, str],
    api_key_id: int | None,
    resolution: Resolution,
    requested: str,
    ctx: RequestContext | None = None,
    conversation_sessions: bool = True,
) -> ChatPlan:
    """Gate the resolved models (400 when no window holds the request, 422 when none can serve it for
    another reason) and put the session's sticky model first. ``ctx`` learns what the request needs of a
    context window, for the router's own context-overflow error. Without ``conversation_sessions`` only a
    session the client names (X-Session-Id, ``user``) is sticky: for stateless requests such as editor
    completions, whose every prompt would otherwise open a session of its own."""
    requirements = chat_requirements(body)
    if ctx is not None:
        ctx.context_tokens = requirements.total_tokens
    # An empty chain is not a capability problem: the router reports it as having no usable upstream.
    if resolution.models and all(model_can_serve(m, requirements) for m in resolution.models):
        if all(too_small(m, requirements) for m in resolution.models):
            raise context_overflow_error(requested, requirements.total_tokens,
                                         {m.name: m.context_window for m in resolution.models})
        raise GatewayError(
            422, no_capable_model_message(requested, requirements, resolution.models), code="no_capable_model"
        )
    plan = ChatPlan(body=body, resolution=resolution, requirements=requirements, api_key_id=api_key_id)
    if resolution.explicit:
        return plan
    key, source = session_key(headers=headers, body=body, api_key_id=api_key_id)
    if source == SessionSource.CONVERSATION and not conversation_sessions:
        return plan
    plan.session_key, plan.session_source = key, source
    store = get_session_store()
    # Read and touched in one round trip: when the sticky model answers (most requests) nothing is left to write.
    sticky = await store.touch(plan.session_key)
    if sticky is None:
        return plan
    first = next(
        (m for m in resolution.models if (m.provider.slug, m.model_id) == (sticky.provider, sticky.model)),
        None,
    )
    if first is None:
        # The model left the chain (or was disabled): the session starts afresh on the chain's order.
        await store.drop(plan.session_key)
        return plan
    plan.sticky = sticky
    plan.resolution = replace(resolution, models=(first, *(m for m in resolution.models if m is not first)))
    return plan


def switch_reason(ctx: RequestContext, sticky: StickySession) -> str:
    """Why the sticky model did not answer, from its lines in the trail, e.g. 'rate-limited' or 'no vision'."""
    reasons: list[str] = []
    for step in ctx.trail:
        if (step.route.provider, step.route.model) != (sticky.provider, sticky.model):
            continue
        # "no vision" says more than "not capable"; "rate-limited" more than "rpm"; a window that was too
        # small says its size.
        if step.group == StepGroup.NOT_CAPABLE or (step.group == StepGroup.CONTEXT_TOO_SMALL and not step.called):
            reason = step.reason
        else:
            reason = step.group or step.reason or step.outcome
        if reason not in reasons:
            reasons.append(reason)
    return ", ".join(reasons) or "no usable key"


def switch_header_value(switched: str) -> str:
    """``ctx.switched`` as a header value: the arrow goes out as UTF-8 bytes, which httpx (and so the openai
    SDK) decodes, instead of Django's RFC 2047 fallback that clients would show as ``=?utf-8?b?...?=``."""
    return switched.encode().decode("latin-1")
