"""Helpers shared by the native adapter tests (tests/providers/test_adapter_*.py)."""

from __future__ import annotations

from providers.adapters.base import Timeouts

TIMEOUTS = Timeouts(connect=2, first_token=5, idle=2)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(text: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


async def collect(stream) -> list[dict]:
    try:
        return [chunk async for chunk in stream.chunks()]
    finally:
        await stream.aclose()


def finishes(chunks: list[dict]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
