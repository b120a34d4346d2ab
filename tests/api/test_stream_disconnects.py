"""A client that goes away: right after the headers, mid-stream, or while the gateway is still failing over.

The upstream call is cancelled (the emulator records the disconnect), the request log still gets its row
with outcome ``cancelled``, and nothing is left running. Many streams at once each get their own answer.
"""

from __future__ import annotations

import asyncio
import json
import socket

import openai
import pytest

from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle
from tests.polling import wait_until

STORY = "one two three four five six seven eight"


def _open(gateway, body: dict) -> socket.socket:
    """Send a chat request on a raw socket, so the test decides exactly when the client leaves."""
    data = json.dumps(body).encode()
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {gateway.api_key}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before {marker!r}: {received!r}"
        received += chunk
    return received


def _rows():
    from analytics.models import RequestLog

    wait_until_idle()
    return list(RequestLog.objects.order_by("id"))


def _assert_nothing_left_running():
    from routing.api.exchange import background_idle

    assert wait_until(background_idle, timeout=10)


@pytest.fixture
def slow_stream(gateway, emulator):
    add_provider(emulator, "groq", ["a;gap=0.2"], ["llama"])
    add_chain("auto", ["groq/llama"])
    return gateway


@pytest.mark.parametrize("leave_after", [b"\r\n\r\n", b'"content":"two '])
def test_leaving_after_headers_or_mid_stream_cancels_upstream_and_logs(slow_stream, emulator, leave_after):
    sock = _open(slow_stream, {"model": "auto", "stream": True, "messages": [{"role": "user", "content": STORY}]})
    assert _read_until(sock, leave_after).startswith(b"HTTP/1.1 200")
    sock.close()

    assert wait_until(lambda: emulator.calls[0].disconnected, timeout=10)
    assert not emulator.calls[0].completed
    [row] = _rows()
    assert (row.outcome, row.stream, row.provider, row.attempts) == ("cancelled", True, "groq", 1)
    _assert_nothing_left_running()


@pytest.mark.parametrize("stream", [True, False])
def test_leaving_while_failing_over_cancels_the_call_in_flight_and_logs(gateway, emulator, settings, stream):
    settings.FREELLM_FIRST_TOKEN_TIMEOUT = 5.0
    add_provider(emulator, "groq", ["a;hang"], ["llama"])
    add_provider(emulator, "gemini", ["ok"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])

    sock = _open(gateway, {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    assert wait_until(lambda: len(emulator.calls) == 1, timeout=10)
    sock.close()

    assert wait_until(lambda: emulator.calls[0].disconnected, timeout=10)
    [row] = _rows()
    assert (row.outcome, row.status_code, row.stream) == ("cancelled", 499, stream)
    assert row.trail == [{"route": "groq/llama/groq-0", "outcome": "cancelled", "ms": row.trail[0]["ms"]}]
    assert row.attempts == 1 and row.provider == ""
    # The client was gone: nobody else was called on its behalf.
    assert emulator.calls_for(provider="gemini") == []
    _assert_nothing_left_running()


def test_thirty_streams_at_once_each_get_their_own_answer(gateway, emulator):
    # One flaky key on the first route, so some of the streams fail over before their first byte.
    add_provider(emulator, "groq", ["a;gap=0.02", "b;gap=0.02;fail=5:429"], ["llama"])
    add_provider(emulator, "gemini", ["c;gap=0.02"], ["flash"])
    add_chain("auto", ["groq/llama", "gemini/flash"])

    async def one(client, i):
        stream = await client.chat.completions.create(
            model="auto", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"stream number {i} here"}],
        )
        text, usage = "", None
        async for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        return text, usage

    async def all_of_them():
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.api_key, max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(30)))

    results = asyncio.run(all_of_them())

    assert [text for text, _ in results] == [f"Echo: stream number {i} here" for i in range(30)]
    assert all(usage is not None and usage.completion_tokens > 0 for _, usage in results)
    rows = _rows()
    assert len(rows) == 30 and {row.outcome for row in rows} == {"ok"}
    _assert_nothing_left_running()
