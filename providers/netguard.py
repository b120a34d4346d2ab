"""The one guard between a configured base URL and the network (SSRF): upstream calls carry provider keys.

A base URL is checked twice:

- when it is configured (admin form, ``import_config``, *Add from catalog*): ``upstream_url_check`` refuses
  other schemes than http/https, internal host names and addresses written in any spelling (``127.1``,
  ``0x7f000001``, ``[::ffff:10.0.0.1]``) without asking DNS, so that a form answers at once;
- when a connection is opened (router, key tests, health probes): the transport (``GuardedAiohttpTransport``,
  or ``GuardedTransport`` through a proxy) resolves the host
  itself, checks every address it got and connects to the checked address (TLS still names the host, for
  SNI and the certificate check). Nothing resolves the name again afterwards, so a DNS answer that changes
  between check and connect (rebinding) cannot reach an internal address.

Internal means anything that is not globally routable (private, loopback, link-local with the cloud
metadata address, CGNAT, unspecified, reserved, documentation), multicast, and IPv6 forms that embed such
an IPv4 address (IPv4-mapped, 6to4, NAT64). ``FREELLM_UPSTREAM_ALLOW`` (comma-separated host names and
CIDRs, e.g. ``127.0.0.1/32,ollama``) lets chosen ones through, such as a local Ollama. Redirects are never
followed (the clients are built with ``follow_redirects=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import ipaddress
import socket
import ssl
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import httpcore
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

ALLOW_SETTING = "FREELLM_UPSTREAM_ALLOW"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names of cloud metadata services that some resolvers answer with a link-local or internal address.
_INTERNAL_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog",
                             "instance-data", "instance-data.ec2.internal"})
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UpstreamAddressRefused(httpx.ConnectError):
    """A connection the guard would not open. An ``httpx.ConnectError``, so the adapters treat it as the
    connection failure it is; its message says what was refused and which setting allows it."""

    # Read by providers.adapters.transport (which imports no app): this message is worth showing.
    explained = True


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks if network.version == address.version)


@functools.lru_cache(maxsize=8)
def parse_allowlist(value: str) -> Allowlist:
    hosts, networks = set(), []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            hosts.add(item.lower().rstrip("."))
    return Allowlist(frozenset(hosts), tuple(networks))


def current_allowlist() -> Allowlist:
    # Read on every use (cached per value) so that tests and settings overrides take effect at once.
    return parse_allowlist(getattr(settings, ALLOW_SETTING, "") or "")


def _refusal(what: str, why: str) -> str:
    return f"upstream {what} refused ({why}); allow it with {ALLOW_SETTING}"


def address_problem(address: IPAddress) -> str | None:
    """Why connecting to ``address`` is refused, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (address.sixtofour if address.sixtofour else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"embeds {embedded}, which {inner}" if inner else None
    if address.is_multicast:
        return "is a multicast address"
    if address.is_unspecified:
        return "is the unspecified address"
    if address.is_loopback:
        return "is a loopback address"
    if address.is_link_local:
        return "is a link-local address (cloud metadata lives there)"
    if address.is_private:
        return "is a private address"
    if not address.is_global:
        return "is not a public address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one in any spelling the C resolver accepts (``127.1``,
    ``0x7f000001``, ``017700000001``, ``[::1]``), without a DNS query; None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])


def upstream_url_check(url: str) -> None:
    """Raise ValueError (with the reason and the setting that allows it) for a base URL the gateway must
    not call: another scheme than http/https, or a host that is internal by its name or its address."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"upstream URL {url!r} refused: only http and https are allowed")
    host = parsed.hostname
    if not host:
        raise ValueError(f"upstream URL {url!r} refused: it names no host")
    allow = current_allowlist()
    if allow.allows_host(host):
        return
    address = literal_address(host)
    if address is not None:
        problem = address_problem(address)
        if problem and not allow.allows_address(address):
            raise ValueError(_refusal(f"host {host}", f"{address} {problem}"))
        return
    name = host.lower().rstrip(".")
    if name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES):
        raise ValueError(_refusal(f"host {host}", "it is an internal or metadata host name"))


def upstream_url_validator(value: str) -> None:
    """``upstream_url_check`` as a Django form/model validator."""
    from django.core.exceptions import ValidationError

    try:
        upstream_url_check(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="upstream_refused") from None


async def resolve_checked(host: str, port: int) -> list[str]:
    """The addresses to connect to for ``host``, every one of them checked; raises UpstreamAddressRefused."""
    allow = current_allowlist()
    name_allowed = allow.allows_host(host)
    address = literal_address(host)
    if address is not None:
        addresses = [address]
    else:
        name = host.lower().rstrip(".")
        if not name_allowed and (name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES)):
            raise UpstreamAddressRefused(_refusal(f"host {host}", "it is an internal or metadata host name"))
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpx.ConnectError(f"could not resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if not name_allowed:
        for candidate in addresses:
            problem = address_problem(candidate)
            # Every address counts: a name answering one public and one internal address is refused.
            if problem and not allow.allows_address(candidate):
                raise UpstreamAddressRefused(_refusal(f"address {candidate} of {host}", f"it {problem}"))
    return [str(candidate) for candidate in addresses]


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the check in front: TCP goes to an address ``resolve_checked``
    returned. httpcore keeps the host name for TLS (SNI, certificate) and for the pool, so connections to
    different names sharing an address are not mixed up."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error: Exception | None = None
        for address in await resolve_checked(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UpstreamAddressRefused(_refusal(f"unix socket {path}", "only TCP upstreams are allowed"))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections pass the guard. Environment proxies are never used
    (one would hide the real destination from the check); a configured ``proxy`` (http, https, socks5,
    socks5h: a provider's or key's outbound proxy) is, and then the guard checks the proxy's address,
    the one this process connects to. What lies behind the proxy is the proxy's to reach; the upstream
    base URL itself was checked by name when it was configured."""

    def __init__(
        self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True, proxy: str | None = None
    ) -> None:
        limits = limits or httpx.Limits()
        super().__init__(limits=limits, verify=verify)
        # The same pools httpx builds, plus our network backend (httpx has no argument for it).
        common = {
            "ssl_context": httpx.create_ssl_context(verify=verify),
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "network_backend": _GuardedBackend(),
        }
        if not proxy:
            self._pool = httpcore.AsyncConnectionPool(**common)
            return
        # httpx.Proxy splits the credentials off the URL, as httpx does for its own proxy pools.
        parsed = httpx.Proxy(url=proxy)
        proxy_url = httpcore.URL(scheme=parsed.url.raw_scheme, host=parsed.url.raw_host, port=parsed.url.port,
                                 target=parsed.url.raw_path)
        if parsed.url.scheme in ("http", "https"):
            self._pool = httpcore.AsyncHTTPProxy(proxy_url=proxy_url, proxy_auth=parsed.raw_auth, **common)
        elif parsed.url.scheme in ("socks5", "socks5h"):
            self._pool = httpcore.AsyncSOCKSProxy(proxy_url=proxy_url, proxy_auth=parsed.raw_auth, **common)
        else:
            raise ValueError(f"proxy scheme {parsed.url.scheme!r} is not http, https, socks5 or socks5h")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return _unbinding(await super().handle_async_request(request))


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's name resolution through ``resolve_checked``: it connects to checked addresses only."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        return [{"hostname": host, "host": address, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET}
                for address in await resolve_checked(host, port)]

    async def close(self) -> None:
        pass


def _close_now(connector: aiohttp.BaseConnector) -> None:
    with contextlib.suppress(Exception):
        connector._close()  # the synchronous part of close(): no loop needed


class _UpstreamResponse(httpx.Response):
    """An upstream answer that lets go of its stream once closed. httpx binds each response's stream to the
    response (``Response.stream`` -> ``BoundAsyncStream`` -> the response): a reference cycle that kept every
    answer (its aiohttp response, headers and buffers) alive until the garbage collector found it, which made
    these the most of the gateway's garbage per request."""

    async def aclose(self) -> None:
        await super().aclose()
        self.stream = _CLOSED_STREAM


_CLOSED_STREAM = httpx.ByteStream(b"")


def _unbinding(response: httpx.Response) -> httpx.Response:
    # The transports' answers, as the subclass: its layout is httpx.Response's own.
    response.__class__ = _UpstreamResponse
    return response


# Tries of a request whose pooled connection the server had closed (GuardedAiohttpTransport).
STALE_CONNECTION_TRIES = 4


class GuardedAiohttpTransport(AiohttpTransport):
    """httpx over aiohttp (httpx-aiohttp) for direct upstream calls, with the guard: names resolve through
    ``_GuardedResolver``, and an address literal (which aiohttp connects to without asking a resolver) is
    checked before the request. Chosen over httpcore's pool by the benchmark (tests/bench_gateway.py): less
    CPU per call, and no scan of every pooled connection per request (httpcore checks each idle connection's
    socket, a cost that grows with concurrency). No cookies are kept here, nor by the client (``_NoCookies``)."""

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(), use_dns_cache=False, ssl=self.ssl_context,
            limit=self.limits.max_connections or 0, keepalive_timeout=self.limits.keepalive_expiry,
        )
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        # A shared client lives as long as its event loop, and nothing awaits its close when the loop or the
        # process ends: its sockets are closed then without the "Unclosed client session" complaint.
        weakref.finalize(session, _close_now, connector)
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if literal_address(host) is not None:
            await resolve_checked(host, request.url.port or (443 if request.url.scheme == "https" else 80))
        # A pooled connection the server closed as its keep-alive ran out, just as it was reused: the request
        # never reached the server. aiohttp sends such a request again only for idempotent methods, and every
        # upstream call is a POST; without this the router took the client's own stale connection for a
        # failing provider (the benchmark saw 502s at the start of a phase). The next idle connection may have
        # gone the same way (connections used together expire together), hence a few tries.
        for _ in range(STALE_CONNECTION_TRIES - 1):
            try:
                return _unbinding(await super().handle_async_request(request))
            except httpx.TransportError as exc:
                if not _closed_under_us(exc.__cause__):
                    raise
        return _unbinding(await super().handle_async_request(request))


def _closed_under_us(cause: BaseException | None) -> bool:
    """The server had closed the connection before any answer came (not a failure to connect at all)."""
    return (isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
            and not isinstance(cause, aiohttp.ClientConnectorError))


def guarded_async_client(*, proxy: str | None = None, **kwargs) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for upstream calls: guarded connections (through ``proxy`` when given, on
    httpcore, which speaks HTTP and SOCKS proxies; else on aiohttp), redirects never followed, no environment
    proxies."""
    limits = kwargs.pop("limits", None) or httpx.Limits()
    transport = GuardedTransport(limits=limits, proxy=proxy) if proxy else GuardedAiohttpTransport(
        limits=limits, trust_env=False)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False,
                             cookies=_NoCookies(), **kwargs)


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing. One client serves every key and every team member: a cookie one provider
    set for one key's call must not ride along on the next call, made with another key. (httpx parses every
    response's headers into an email message for its jar: that work goes too.)"""

    def extract_cookies(self, response, request) -> None:
        pass

    def add_cookie_header(self, request) -> None:
        pass


def proxy_url_check(url: str) -> None:
    """Raise ValueError for an outbound proxy whose host the guard refuses (internal by name or literal
    address, as ``upstream_url_check`` does for base URLs); the connection to it is checked again."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    try:
        upstream_url_check(f"http://{'[' + host + ']' if ':' in host else host}{port}")
    except ValueError as exc:
        raise ValueError(str(exc).replace("upstream URL", "proxy", 1).replace("upstream host", "proxy host", 1)) from None

