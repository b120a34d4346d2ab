"""AI Horde's asynchronous text wire: submit a job, poll its status, cancel it, list the workers' models.

- ``POST /<provider>/.../generate/text/async`` → 202 ``{"id", "kudos"}``; the key is the ``apikey`` header
  (``0000000000`` is the anonymous key and behaves like a plain succeeding key); a request without a
  ``Client-Agent`` header is refused with 400, as the Horde asks every integration to name itself.
- ``GET .../generate/text/status/{id}``: the first poll reports the job queued (``done: false``), the next
  one done with ``generations[0].text`` (the emulator's usual reply to the prompt's last "User:" turn).
  A model id starting with ``impossible`` reports ``is_possible: false``; one starting with ``faulty``
  reports ``faulted: true``.
- ``DELETE .../generate/text/status/{id}`` cancels (recorded as a call, the job marked cancelled).
- ``GET .../status/models?type=text``: ``engine.models[provider]`` (ids or dicts) as Horde model entries.

Key directives (429, 401, slow=, ...) apply to the submit call, as for every other wire.
"""

from __future__ import annotations

import itertools
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import content
from .behaviour import ERROR, GONE, Decision, Engine
from .openai import provider_of

ANONYMOUS_KEY = "0000000000"
_ids = itertools.count(1)


def horde_error(status: int, message: str, rc: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "rc": rc}, status_code=status, headers=headers)


def error_response(decision: Decision) -> Response:
    error = decision.error
    if decision.action == GONE or error is None:
        return Response(status_code=499)
    if error.status in (401, 403):
        return horde_error(401, "Invalid API Key", "InvalidAPIKey", decision.headers)
    if error.status == 429:
        return horde_error(429, "This IP has exceeded the rate limit", "TooManyPrompts", decision.headers)
    return horde_error(error.status, error.message, "Emulated", decision.headers)


def _key(request: Request) -> str | None:
    key = request.headers.get("apikey")
    return None if key is None else ("anonymous" if key == ANONYMOUS_KEY else key)


def _user_turn(prompt: str) -> str:
    turns = [line.removeprefix("User:").strip() for line in prompt.splitlines() if line.startswith("User:")]
    return turns[-1] if turns else prompt


def routes(engine: Engine) -> list[Route]:
    jobs: dict[str, dict] = {}

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        models = (body or {}).get("models") or [] if isinstance(body, dict) else []
        model = models[0] if models else None
        decision = await engine.admit(request, provider=provider_of(request), key=_key(request), model=model,
                                      body=body)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            decision.finish(400)
            return horde_error(400, "Input payload validation failed", "MissingPrompt")
        if not request.headers.get("client-agent"):
            decision.finish(400)
            return horde_error(400, "Please send a Client-Agent header", "MissingClientAgent")
        job_id = f"emu-{next(_ids)}"
        text = content.reply_text([{"role": "user", "content": _user_turn(body["prompt"])}])
        jobs[job_id] = {"polls": 0, "model": model or "koboldcpp/emulated-7B", "text": text + "\nUser:",
                        "cancelled": False}
        decision.finish(202)
        return JSONResponse({"id": job_id, "kudos": 10.0}, status_code=202, headers=decision.headers)

    def _status(job: dict) -> dict:
        model = job["model"]
        base = {"finished": 0, "processing": 0, "restarted": 0, "waiting": 1, "done": False, "faulted": False,
                "wait_time": 1, "queue_position": 1, "kudos": 10.0, "is_possible": True, "generations": []}
        if model.startswith("impossible"):
            return {**base, "is_possible": False}
        if model.startswith("faulty"):
            return {**base, "faulted": True, "waiting": 0}
        job["polls"] += 1
        if job["polls"] < 2 or job["cancelled"]:
            return base
        generation = {"worker_id": "w-1", "worker_name": "emulated worker", "model": model, "state": "ok",
                      "text": job["text"], "seed": 0}
        return {**base, "finished": 1, "waiting": 0, "done": True, "wait_time": 0, "queue_position": 0,
                "generations": [generation]}

    async def status(request: Request) -> Response:
        job = jobs.get(request.path_params["job_id"])
        record = engine.record(request, provider=provider_of(request), key=_key(request),
                               model=job["model"] if job else None, body=None)
        if job is None:
            record.status = 404
            return horde_error(404, "Request not found", "RequestNotFound")
        if request.method == "DELETE":
            job["cancelled"] = True
        record.status = 200
        return JSONResponse(_status(job))

    async def models(request: Request) -> Response:
        decision = await engine.admit(request, provider=provider_of(request), key=_key(request), model=None,
                                      body=None)
        if decision.action in (ERROR, GONE):
            return error_response(decision)
        listed = []
        for entry in engine.models.get(provider_of(request), ["koboldcpp/emulated-7B"]):
            item = entry if isinstance(entry, dict) else {"name": entry}
            listed.append({"performance": 10.0, "queued": 0, "jobs": 0, "eta": 5, "type": "text", "count": 1, **item})
        return engine.json(decision, listed)

    return [
        Route("/{prefix:path}/generate/text/async", submit, methods=["POST"]),
        Route("/{prefix:path}/generate/text/status/{job_id}", status, methods=["GET", "DELETE"]),
        Route("/{prefix:path}/status/models", models, methods=["GET"]),
    ]
