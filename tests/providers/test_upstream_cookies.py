"""The shared upstream client keeps no cookies: a cookie one provider set on one key's answer never rides
along on the next call, which may be another key's or another team member's (providers.netguard)."""

from __future__ import annotations

import asyncio

from providers.netguard import guarded_async_client

BODY = b'{"ok": true}'


async def test_a_cookie_an_upstream_sets_is_not_sent_back(settings):
    settings.FREELLM_UPSTREAM_ALLOW = "127.0.0.1"
    heads: list[bytes] = []

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head.lower())
                writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=key-a-secret; Path=/\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/models"
    try:
        async with guarded_async_client(timeout=5) as client:
            first = await client.get(url, headers={"Authorization": "Bearer key-a"})
            await client.get(url, headers={"Authorization": "Bearer key-b"})
            assert first.headers["set-cookie"].startswith("session=")
            assert not client.cookies
    finally:
        server.close()
        await server.wait_closed()
    assert len(heads) == 2 and not any(b"\r\ncookie:" in head for head in heads)
