"""A served request leaves no reference cycles: its objects go when it ends, not at a full garbage collection.

Cycles per request made the collector the gateway's largest single cost under load, and held each request's
objects (its body, its upstream answer's buffers) until a full collection came, so memory grew with prompt size.
"""

from __future__ import annotations

import gc

import httpx
from django.core.handlers.asgi import ASGIRequest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle


def _cyclic_garbage_after(make_requests) -> list[object]:
    """What the collector finds unreachable (and would have to free) once ``make_requests`` has run."""
    gc.collect()
    gc.disable()
    try:
        make_requests()
        wait_until_idle()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


def test_plain_and_streamed_requests_leave_no_cycles(gateway, emulator):
    add_provider(emulator, "groq", ["g-a"], ["llama"])
    add_chain("auto", ["groq/llama"])
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    url = f"{gateway.base_url}/chat/completions"

    def make_requests():
        with httpx.Client(headers=headers) as client:
            for i in range(5):
                answer = client.post(url, json={"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]})
                assert answer.status_code == 200, answer.text
                with client.stream("POST", url, json={"model": "auto", "stream": True,
                                                      "messages": [{"role": "user", "content": f"count {i}"}]}) as s:
                    assert s.status_code == 200
                    assert "data: [DONE]" in "".join(s.iter_text())

    garbage = _cyclic_garbage_after(make_requests)
    requests = [o for o in garbage if isinstance(o, ASGIRequest)]
    # The gateway's own calls to the emulator (the test client's responses to the gateway are its own business).
    upstream = [o for o in garbage if isinstance(o, httpx.Response) and str(o.request.url).startswith(emulator.url)]
    assert requests == []
    assert upstream == []
