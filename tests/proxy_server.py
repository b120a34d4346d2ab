"""A tiny outbound proxy for tests: HTTP forward proxy (absolute-URI requests), HTTP CONNECT tunnels and
SOCKS5 (no auth or username/password, RFC 1928/1929) on one port each, in a thread, recording every
connection. Real sockets, so the gateway's httpx clients are tested exactly as they go through a proxy.

    with ProxyServer(user="u", password="p") as proxy:
        proxy.http_url / proxy.socks5_url   # with the credentials in them
        proxy.seen                          # list[Seen]: protocol, target "host:port", authenticated
"""

from __future__ import annotations

import asyncio
import base64
import threading
from dataclasses import dataclass


@dataclass
class Seen:
    protocol: str  # "http-forward", "http-connect", "socks5"
    target: str  # host:port the client asked for
    authenticated: bool


class ProxyServer:
    def __init__(self, *, user: str = "", password: str = "") -> None:
        self.user, self.password = user, password
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.base_events.Server] = []
        self.http_port = self.socks_port = 0

    def __enter__(self) -> ProxyServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=5)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _credentials(self) -> str:
        return f"{self.user}:{self.password}@" if self.user else ""

    @property
    def http_url(self) -> str:
        return f"http://{self._credentials()}127.0.0.1:{self.http_port}"

    @property
    def socks5_url(self) -> str:
        return f"socks5://{self._credentials()}127.0.0.1:{self.socks_port}"

    async def _start(self) -> None:
        http = await asyncio.start_server(self._http, "127.0.0.1", 0)
        socks = await asyncio.start_server(self._socks, "127.0.0.1", 0)
        self._servers = [http, socks]
        self.http_port = http.sockets[0].getsockname()[1]
        self.socks_port = socks.sockets[0].getsockname()[1]

    # --- HTTP --------------------------------------------------------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, uri, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")), "")
        authenticated = bool(self.user) and auth == "Basic " + base64.b64encode(
            f"{self.user}:{self.password}".encode()).decode()
        if self.user and not authenticated:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = uri.rpartition(":")
            self.seen.append(Seen("http-connect", uri, authenticated))
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)
            return
        # Forward proxying: "POST http://host:port/path HTTP/1.1"; the rest of the stream is relayed as is.
        rest = uri.split("://", 1)[1]
        authority, _, path = rest.partition("/")
        host, _, port = authority.partition(":")
        self.seen.append(Seen("http-forward", f"{host}:{port or 80}", authenticated))
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port or 80))
        # One request per connection: the upstream closes after answering, so the client reconnects (and
        # is seen again) for its next request instead of reusing a relayed connection.
        kept = [h for h in headers if not h.lower().startswith(("proxy-authorization:", "proxy-connection:",
                                                                 "connection:"))]
        request = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close"]) + "\r\n\r\n"
        upstream_writer.write(request.encode("latin-1"))
        await upstream_writer.drain()
        await _pipe_both(reader, writer, upstream_reader, upstream_writer)

    # --- SOCKS5 ------------------------------------------------------------------------------------

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            version, count = await reader.readexactly(2)
            methods = await reader.readexactly(count)
            authenticated = False
            if self.user:
                if 2 not in methods:
                    writer.write(b"\x05\xff")
                    return
                writer.write(b"\x05\x02")
                await reader.readexactly(1)
                user = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
                password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
                authenticated = (user, password) == (self.user, self.password)
                writer.write(b"\x01\x00" if authenticated else b"\x01\x01")
                if not authenticated:
                    return
            else:
                writer.write(b"\x05\x00")
            _, command, _, address_type = await reader.readexactly(4)
            if address_type == 1:
                host = ".".join(str(b) for b in await reader.readexactly(4))
            elif address_type == 3:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            else:
                writer.write(b"\x05\x08\x00\x01" + bytes(6))
                return
            port = int.from_bytes(await reader.readexactly(2), "big")
            self.seen.append(Seen("socks5", f"{host}:{port}", authenticated))
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            await writer.drain()
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _pipe_both(client_reader, client_writer, upstream_reader, upstream_writer) -> None:
    await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
