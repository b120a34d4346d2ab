"""Context handoff: when another model takes a conversation over, tell it what it is walking into.

One system message goes after the leading system messages: which model it replaces, a compact structured
summary of the task so far (goals, answers given, facts given, tool calls and their results), and that the
latest user message wins over anything older. The most recent turns stay verbatim as far as they fit the
new model's context window; older turns survive only in the summary. The summary is built by rules, not by
another model call: a handoff happens when things are already failing and must not add a round trip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routing.tokens import estimate_tokens

HANDOFF_MARKER = "[freellm context handoff]"

_SYSTEM_ROLES = ("system", "developer")
# A user sentence asking for something is a goal; any other sentence is a fact the user gave.
_REQUEST_START = re.compile(
    r"^(please|pls|can|could|would|will|should|shall|what|why|how|when|where|which|who|is|are|do|does|did|"
    r"write|make|create|give|tell|explain|show|list|help|plan|find|add|fix|change|translate|summari[sz]e|"
    r"generate|draft|rewrite|convert|compare|suggest|describe|build|implement|let's|lets|i want|i need|"
    r"i'd like|i would like)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def is_handoff_message(message: Any) -> bool:
    return (
        isinstance(message, Mapping)
        and message.get("role") in _SYSTEM_ROLES
        and _text(message.get("content")).startswith(HANDOFF_MARKER)
    )


def build_handoff(
    messages: list[dict],
    *,
    previous_model: str,
    new_model: str,
    context_window: int | None,
    reserve_tokens: int,
) -> list[dict]:
    """The messages to send to ``new_model``; ``messages`` itself is not modified.

    Never injects twice: messages that already carry a handoff are returned as they are.
    """
    if any(is_handoff_message(m) for m in messages):
        return list(messages)
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in _SYSTEM_ROLES:
        lead += 1
    head, turns = list(messages[:lead]), list(messages[lead:])
    budget = context_window - reserve_tokens if context_window else None

    exchanges = _exchanges(turns)
    # The latest exchange is what the model must answer: always kept, whatever it costs.
    kept = exchanges[-1:] if exchanges else []
    summary_budget = _summary_budget(budget)
    note = _handoff_message(turns, previous_model, new_model, summary_budget)
    if budget is not None:
        used = _tokens([*head, note, *_flatten(kept)])
        for exchange in reversed(exchanges[:-1]):
            cost = _tokens(exchange)
            if used + cost > budget:
                break
            kept.insert(0, exchange)
            used += cost
    else:
        kept = exchanges
    dropped = len(turns) - len(_flatten(kept))
    if dropped:
        note = _handoff_message(turns, previous_model, new_model, summary_budget, dropped=dropped)
    return [*head, note, *_flatten(kept)]


def _exchanges(turns: list[dict]) -> list[list[dict]]:
    """Turns cut before each user message: cutting elsewhere could orphan a tool result from its call,
    and some providers refuse a conversation that does not start with a user turn."""
    out: list[list[dict]] = []
    for message in turns:
        if not out or message.get("role") == "user":
            out.append([])
        out[-1].append(message)
    return out


def _flatten(exchanges: list[list[dict]]) -> list[dict]:
    return [m for exchange in exchanges for m in exchange]


def _tokens(messages: list[dict]) -> int:
    return estimate_tokens(messages)


def _summary_budget(budget: int | None) -> int:
    # A quarter of what is left for the prompt, within bounds: enough for orientation, never the bulk.
    if budget is None:
        return 1500
    return max(150, min(1500, budget // 4))


# --- summary ---------------------------------------------------------------------------------------


@dataclass
class _Summary:
    goals: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)


def _summarise(turns: list[dict], item_chars: int) -> _Summary:
    summary = _Summary()
    calls: dict[str, str] = {}  # tool_call_id → "name(args)"
    answered: set[str] = set()
    order: list[str] = []
    for message in turns[:-1] if turns and turns[-1].get("role") == "user" else turns:
        role = message.get("role")
        text = _text(message.get("content"))
        if role == "user":
            for sentence in _sentences(text):
                (
                    summary.goals
                    if _REQUEST_START.match(sentence) or sentence.endswith("?")
                    else summary.facts
                ).append(_clip(sentence, item_chars))
        elif role == "assistant":
            if text:
                summary.answers.append(_clip(text, item_chars))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                call_id = call.get("id") or f"call{len(order)}"
                calls[call_id] = (
                    f"{function.get('name', '?')}({_clip(_args(function.get('arguments')), item_chars // 2)})"
                )
                order.append(call_id)
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id") or ""
            if call_id not in calls:
                # A result whose call is not in the conversation (or a legacy function message): keep it anyway.
                calls[call_id] = f"{message.get('name') or 'tool'}()"
                order.append(call_id)
            calls[call_id] += f" → {_clip(text, item_chars)}"
            answered.add(call_id)
    for call_id in order:
        summary.tools.append(
            calls[call_id] if call_id in answered else f"{calls[call_id]} → (no result yet: open)"
        )
    return summary


def _handoff_message(
    turns: list[dict], previous_model: str, new_model: str, summary_budget: int, *, dropped: int = 0
) -> dict:
    # Shrink the summary until it fits its budget: shorter items first, then only the most recent ones.
    item_chars, keep = 240, 12
    while True:
        summary = _summarise(turns, item_chars)
        text = _render(summary, previous_model, new_model, dropped, keep)
        if _tokens([{"role": "system", "content": text}]) <= summary_budget or keep == 1:
            return {"role": "system", "content": text}
        if item_chars > 60:
            item_chars //= 2
        else:
            keep = max(1, keep // 2)


def _render(summary: _Summary, previous_model: str, new_model: str, dropped: int, keep: int) -> str:
    lines = [
        f"{HANDOFF_MARKER} You ({new_model}) are taking over a conversation that {previous_model} was handling "
        "until now. Continue it seamlessly in the same language, tone and format; do not mention the switch.",
    ]
    sections = [
        ("Goals (what the user asked for)", summary.goals),
        ("Answers and decisions already given", summary.answers),
        ("Facts the user gave", summary.facts),
        ("Tool calls and their results", summary.tools),
    ]
    if any(items for _, items in sections):
        lines.append("Summary of the conversation so far:")
        for title, items in sections:
            if items:
                # The first item is usually the task itself; after it, the most recent matter most.
                shown = items if len(items) <= keep else [items[0], *items[len(items) - keep + 1 :]]
                more = len(items) - len(shown)
                lines.append(f"{title}:" + (f" ({more} in between omitted)" if more else ""))
                lines.extend(f"- {item}" for item in shown)
    if dropped:
        lines.append(
            f"The {dropped} oldest messages are only in this summary; the most recent ones follow verbatim."
        )
    lines.append("If anything here conflicts with the latest user message, the latest user message wins.")
    return "\n".join(lines)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping):
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") in ("image_url", "input_image", "image"):
                    texts.append("[image]")
            elif isinstance(part, str):
                texts.append(part)
        return " ".join(t.strip() for t in texts if t.strip())
    return ""


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _args(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"
