"""A pooled upstream connection the server closed as its keep-alive ran out, just as it was reused, costs the
request nothing: it goes again on another connection (providers.netguard.GuardedAiohttpTransport).

The server here is a few lines of asyncio on a real socket: it answers the first request of each connection
with keep-alive and closes the connection, unanswered, when a second request comes on it; the race a server's
keep-alive timeout makes with a client that reuses the connection at that moment, made certain."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from providers.netguard import guarded_async_client

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@pytest.fixture
async def closing_server():
    seen: list[bytes] = []
    connections = 0

    async def serve(reader, writer):
        nonlocal connections
        connections += 1
        try:
            seen.append(await _read_request(reader))
            writer.write(ANSWER)
            await writer.drain()
            # The next request on this connection finds it closed under it.
            await reader.read(1)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1/chat/completions", seen, lambda: connections
    server.close()
    await server.wait_closed()


async def test_a_request_on_a_connection_the_server_closed_goes_again_on_a_new_one(settings, closing_server):
    settings.FREELLM_UPSTREAM_ALLOW = "127.0.0.1"
    url, seen, connections = closing_server
    async with guarded_async_client(timeout=5) as client:
        first = await client.post(url, json={"n": 1})
        second = await client.post(url, json={"n": 2})
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"ok": True}
    # The second request was sent twice: on the closed connection, then whole on a new one.
    assert connections() == 2
    assert seen[-1].split(b"\r\n\r\n", 1)[1].replace(b" ", b"") == b'{"n":2}'


async def test_a_server_that_cannot_be_reached_is_not_asked_twice(settings):
    settings.FREELLM_UPSTREAM_ALLOW = "127.0.0.1"
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with guarded_async_client(timeout=5) as client:
        with pytest.raises(httpx.TransportError):
            await client.post(f"http://127.0.0.1:{port}/v1", json={})
