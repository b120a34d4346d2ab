"""AI Horde, native: a crowdsourced queue of volunteer workers with an asynchronous wire of its own.

A generation is a job: ``POST {base_url}/generate/text/async`` submits it (202 with its ``id``), ``GET
{base_url}/generate/text/status/{id}`` reports ``done`` / ``faulted`` / ``is_possible`` and, once done, the
``generations``; ``DELETE`` on the same URL cancels it. ``Target.base_url`` is the versioned root,
``https://aihorde.net/api/v2``. The key goes in an ``apikey`` header; without one the anonymous key
``0000000000`` is sent (lowest priority). Every call also carries the ``Client-Agent`` header from the
provider's headers (the Horde asks integrations to name themselves). No Django here.

Wire quirks handled here:
- chat messages become one prompt transcript ("System:/User:/Assistant:"), ending with "Assistant:",
  and the next "User:" turn is a stop sequence;
- ``max_tokens`` is ``params.max_length``, clamped to the Horde's 16..512; ``stop`` is
  ``params.stop_sequence``; ``temperature`` and ``top_p`` keep their names; other OpenAI parameters
  (tools, response_format, ...) have no Horde equivalent and are not sent;
- the model is ``models: [id]``, or ``[]`` (any worker) for the catalog's ``any``;
- streaming is not part of the wire: a stream request waits for the finished job and sends it as one chunk;
- the Horde reports no token counts, so usage is absent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import (
    Adapter,
    DiscoveredModel,
    ErrorKind,
    Target,
    Timeouts,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
)
from .transport import (
    ChunkFactory,
    chat_completion,
    kind_for_status,
    redact,
    response_json,
    send,
    stop_list,
    text_of,
)

ANONYMOUS_KEY = "0000000000"
ANY_MODEL = "any"
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 16, 512, 256
DEFAULT_CONTEXT = 2048
# The Horde caches a job's status for a second: polling faster only costs requests.
POLL_INTERVAL = 1.0
_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def build_prompt(messages: list[dict]) -> str:
    lines = []
    for message in messages:
        role = _ROLES.get(str(message.get("role")), "User")
        lines.append(f"{role}: {text_of(message.get('content')).strip()}")
    lines.append("Assistant:")
    return "\n".join(lines)


def build_generate_request(request: dict, model: str) -> dict:
    """The Horde job for an OpenAI chat request (see the module docstring for the mapping)."""
    wanted = request.get("max_completion_tokens") or request.get("max_tokens") or DEFAULT_LENGTH
    params: dict[str, Any] = {
        "max_length": max(MIN_LENGTH, min(MAX_LENGTH, int(wanted))),
        "max_context_length": DEFAULT_CONTEXT,
        "stop_sequence": [*(stop_list(request.get("stop")) or []), "\nUser:"],
    }
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            params[name] = request[name]
    return {
        "prompt": build_prompt(request.get("messages") or []),
        "params": params,
        "models": [] if model == ANY_MODEL else [model],
    }


def _trim(text: str, stops: list[str]) -> str:
    # Workers may return the stop sequence itself; the client should not see it.
    for stop in stops:
        if stop and text.endswith(stop):
            text = text[: -len(stop)]
    return text.strip()


def error_from_response(response: httpx.Response, api_key: str | None) -> UpstreamError:
    body = response_json(response)
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("rc") or "")
    message = redact(message or response.text[:300] or "no error message", api_key)
    kind = kind_for_status(response.status_code)
    return UpstreamError(kind, f"aihorde: HTTP {response.status_code}: {message}", status=response.status_code,
                         headers=response.headers)


class AIHordeAdapter(Adapter):
    name = "aihorde"

    def __init__(self, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.poll_interval = poll_interval

    def _headers(self, target: Target) -> dict[str, str]:
        return {**target.headers, "apikey": target.api_key or ANONYMOUS_KEY}

    def _url(self, target: Target, path: str) -> str:
        return f"{target.base_url.rstrip('/')}/{path}"

    async def _call(self, client: httpx.AsyncClient, target: Target, method: str, path: str,
                    timeouts: Timeouts, json: Any = None) -> httpx.Response:
        return await send(client, method, self._url(target, path), provider=target.provider, timeouts=timeouts,
                          to_error=lambda r: error_from_response(r, target.api_key), headers=self._headers(target),
                          json=json)

    async def _generate(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> tuple[str, str, httpx.Response]:
        job = build_generate_request(request, target.model)
        submitted = await self._call(client, target, "POST", "generate/text/async", timeouts, json=job)
        job_id = (response_json(submitted) or {}).get("id")
        if not job_id:
            raise UpstreamError(ErrorKind.SERVER, f"{target.provider}: the job was not accepted (no id)")
        # The whole wait counts against first_token: a queued job that outlasts it is cancelled.
        deadline = time.monotonic() + timeouts.first_token
        try:
            while True:
                status = response_json(await self._call(client, target, "GET", f"generate/text/status/{job_id}", timeouts))
                if not isinstance(status, dict):
                    raise UpstreamError(ErrorKind.SERVER, f"{target.provider}: unreadable job status")
                if status.get("faulted"):
                    raise UpstreamError(ErrorKind.SERVER, f"{target.provider}: the worker failed the job")
                if status.get("is_possible") is False:
                    raise UpstreamError(ErrorKind.NOT_FOUND, f"{target.provider}/{target.model}: no worker serves this model now")
                generations = status.get("generations") or []
                if status.get("done") and generations:
                    first = generations[0]
                    text = _trim(str(first.get("text") or ""), job["params"]["stop_sequence"])
                    return text, str(first.get("model") or target.model), submitted
                if time.monotonic() + self.poll_interval > deadline:
                    raise UpstreamError(ErrorKind.TIMEOUT, f"{target.provider}: the job was still queued when time ran out")
                await asyncio.sleep(self.poll_interval)
        except BaseException:
            await self._cancel(client, target, job_id, timeouts)
            raise

    async def _cancel(self, client: httpx.AsyncClient, target: Target, job_id: str, timeouts: Timeouts) -> None:
        # Best effort: an abandoned job would still spend a volunteer's time (and the user's kudos).
        try:
            await asyncio.shield(self._call(client, target, "DELETE", f"generate/text/status/{job_id}", timeouts))
        except (UpstreamError, asyncio.CancelledError):
            pass

    async def chat(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamResponse:
        text, model, submitted = await self._generate(client, target, request, timeouts)
        answer = chat_completion(model=model, message={"role": "assistant", "content": text},
                                 finish_reason="stop", usage=None)
        return UpstreamResponse(body=answer, usage=None, headers=dict(submitted.headers))

    async def chat_stream(self, client: httpx.AsyncClient, target: Target, request: dict, timeouts: Timeouts) -> UpstreamStream:
        text, model, submitted = await self._generate(client, target, request, timeouts)
        factory = ChunkFactory(model)

        async def chunks() -> AsyncIterator[dict]:
            yield factory.delta({"role": "assistant", "content": text})
            yield factory.delta({}, finish_reason="stop")

        async def close() -> None:
            return None

        return UpstreamStream(submitted.headers, chunks(), close)

    async def list_models(self, client: httpx.AsyncClient, target: Target, timeouts: Timeouts) -> list[DiscoveredModel]:
        response = await self._call(client, target, "GET", "status/models?type=text", timeouts)
        listed = response_json(response)
        if not isinstance(listed, list):
            raise UpstreamError(ErrorKind.SERVER, f"{target.provider}: the model list is not a list")
        return [
            DiscoveredModel(id=str(item["name"]), kind="chat", name=f"{item.get('count', 0)} worker(s)")
            for item in listed
            if isinstance(item, dict) and item.get("name")
        ]
