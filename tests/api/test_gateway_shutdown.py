"""A gateway process stopped with SIGTERM (a restart, a deploy) keeps what it owes: the request log rows of
the requests it answered (found by tests/soak_production.py, which restarts a gateway mid-run)."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.fixtures_gateway import add_chain, add_provider
from tests.polling import wait_until


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sigterm_right_after_an_answer_keeps_its_request_log_row(gateway_processes, emulator, django_user_model,
                                                                 stream, server):
    from analytics.models import RequestLog
    from routing.services import api_key_create

    add_provider(emulator, "groq", ["k"], ["llama"])
    add_chain("auto", ["groq/llama"])
    _, key = api_key_create(user=django_user_model.objects.create_user("bob"), name="t")
    (gw,) = gateway_processes(1, server)

    answer = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                        json={"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    # At once: the row is still queued in the background (rows are written in batches off the hot path).
    gw.stop()

    assert answer.status_code == 200
    # uvicorn, once its shutdown is done, ends by the signal it got (as a process killed by it would).
    assert gw.proc.returncode == (-signal.SIGTERM if server == "uvicorn" else 0)
    row = RequestLog.objects.get()
    assert (row.endpoint, row.stream, row.status_code, row.outcome) == ("chat", stream, 200, "ok")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sigterm_during_a_request_cancels_it_and_logs_it(gateway_processes, emulator, django_user_model, stream):
    from concurrent.futures import ThreadPoolExecutor

    from analytics.models import RequestLog
    from routing.services import api_key_create

    add_provider(emulator, "groq", ["k;slow=20"], ["llama"])
    add_chain("auto", ["groq/llama"])
    _, key = api_key_create(user=django_user_model.objects.create_user("bob"), name="t")
    (gw,) = gateway_processes(1)

    def ask():
        with httpx.Client(timeout=30) as client:
            try:
                return client.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                   json={"model": "auto", "stream": stream,
                                         "messages": [{"role": "user", "content": "hi"}]}).status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(ask)
        wait_until(lambda: emulator.calls, timeout=10)
        gw.stop()  # a deploy: daphne closes the connection of every request in flight
        assert isinstance(answer.result(), str)  # the client saw the connection go

    assert gw.proc.returncode == 0
    row = RequestLog.objects.get()
    assert (row.status_code, row.outcome, row.stream) == (499, "cancelled", stream)
    # The upstream call was cancelled with it, not left running until the process died.
    assert emulator.calls[0].disconnected
