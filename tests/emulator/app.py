"""The emulator's Starlette app: native wire formats first, then the OpenAI routes that match any prefix."""

from __future__ import annotations

import importlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .behaviour import CallRecord, Engine

# Each module exposes ``routes(engine) -> list[Route]``. Native formats come before ``openai`` because the
# OpenAI routes match ``/{prefix:path}/...`` and would otherwise swallow them. A module not written yet is
# skipped, so the wire formats can land one at a time.
ROUTE_MODULES = ("gemini", "cohere", "cloudflare", "aihorde", "openai")


def create_app(engine: Engine | None = None) -> Starlette:
    engine = engine or Engine()

    async def calls(request: Request) -> JSONResponse:
        # The recorder over HTTP, for scripts that run the emulator as a process of its own (soak tests).
        since = float(request.query_params.get("since") or 0)
        return JSONResponse([_call_summary(call) for call in engine.calls if call.time >= since])

    routes = [Route("/_emulator/calls", calls, methods=["GET"])]
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        routes.extend(module.routes(engine))

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        # Recorded too, so a test that built a wrong URL sees what was called.
        key = request.headers.get("x-goog-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        call = engine.record(request, provider=request.url.path.strip("/").split("/", 1)[0], key=key or None,
                             model=None, body=None)
        call.status = 404
        body = {"error": {"message": f"emulator: no route for {request.method} {request.url.path}",
                          "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
        return JSONResponse(body, status_code=404)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.engine = engine
    return app


def _call_summary(call: CallRecord) -> dict:
    return {
        "provider": call.provider, "path": call.path, "key": call.key, "key_name": call.key_name,
        "model": call.model, "body": call.body, "time": call.time, "ended": call.ended, "status": call.status,
        "stream": call.stream, "disconnected": call.disconnected, "completed": call.completed,
    }  # fmt: skip
