"""Gateway benchmark: a script that prints numbers, never a test.

    python -m tests.bench_gateway [--quick] [--redis URL] [--postgres URL] [--processes N] [--server daphne|uvicorn]
                                  [--requests N] [--serial N] [--rounds N] [--warmup N] [--monitor N] [--keys N]
                                  [--prompt-kb N] [--log-rows N] [--no-variants] [--json PATH] [--profile DIR] [--bare-v1] [--without PARTS] [--pin] [--keep]

It builds a throwaway environment (temp FREELLM_VAR_DIR with its own SQLite, or with --postgres a temporary
database on that server; ``manage.py migrate``; one provider served by the upstream emulator with three keys;
a two-model chain ``auto``; a unified key), starts the emulator and N gateway processes (daphne, as
``./dev run`` serves), and drives chat completions with an aiohttp client (cheaper per request than httpx,
so the load generator is not what is measured; its ceiling against the emulator alone is printed).

Each row of the table is one configuration, measured the same way:

- sequential: requests one at a time, in rounds interleaved with the same requests sent to the emulator
  directly, so "added" p50/p95/p99 compare like with like on a busy machine;
- time to first byte of a stream sent alone (12 content chunks 5 ms apart: the emulator's ``gap=``), also
  interleaved with the emulator direct;
- throughput at 32 and 128 in flight, plain and streaming;
- CPU ms per request of every process (gateways, emulator, Redis, the client itself) from /proc, and the
  gateways' RSS when idle (after warm-up) and after the row;
- per request, exactly: SQL statements and transactions as the gateways run them (an execute wrapper),
  sessions and transactions as PostgreSQL counts them (pg_stat_database, less the benchmark's own; a backend
  reports its counts at most once a second, and an idle one within 10 s, so a short phase after other work
  can show some of that work: the gateways' own count is the exact one), and
  Redis round trips and commands as the gateways' redis-py clients send them (a pipeline is one round
  trip). A separate short phase under Redis MONITOR counts the commands run in the run's Redis database,
  those inside Lua scripts included (INFO commandstats, printed too, counts those but is server-wide);
- per request, the gateways' time in the garbage collector (gc.callbacks), and its full collections.

The rows: the main shape (--processes, --server); the stack's floor, a gateway process of the same server
that answers /v1/chat/completions with a bare proxy (one JSON parse, the gateway's three Redis round trips,
one upstream call through the gateway's own upstream client, no freellm code: ``_floor_proxy``), whose CPU
per request is printed against the main shape's; one process more (or one alone); the other ASGI server
(uvicorn with httptools and uvloop, on the same app); the upstream client on httpx's own httpcore transport
instead of aiohttp, with 100 and with 256 idle keep-alive connections; the main shape with --prompt-kb KB
prompts (what a coding agent sends); then the main shape again with --keys upstream keys and then also
--log-rows old RequestLog rows (generated inside the database in one statement). --no-variants
skips the scale-out, server and transport rows. The table goes to stdout, everything to a JSON file.

The gateways run ``tests.bench_gateway:application``: freellm's own ASGI application plus the counters and
a ``/__bench__/stats`` path; nothing else is changed (the transport rows build the shared upstream client
another way: what-ifs). With --redis the gateways use that Redis (quota store, sticky sessions, config
version, channel layer): give it a database of its own (``redis://host:6379/4``), as MONITOR counts by
database; keys the run creates there are deleted at the end. --profile DIR samples the gateways with
py-spy (not a project dependency; on PATH) during the concurrent phases. --bare-v1 is a what-if: /v1 served
by a Django handler without MIDDLEWARE; --without log,mirror,metrics another: those parts of each request's
bookkeeping left out, to see what they cost. For a before/after, --pin puts the gateway on the last CPU and
this script and the emulator on the others (Redis and PostgreSQL are the machine's, left as they are), and
the line under the table gives the gateway's CPU over the emulator's per request, which follows the machine's
speed less than the CPU figures do.

Every phase ends by count, every wait by time. Everything it started is stopped, the temp database
dropped and the temp dir removed, on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
STATS_PATH = "/__bench__/stats"
# Streams: 12 content chunks (the role chunk, "Echo:" and STREAM_TEXT's ten words), CHUNK_GAP apart. Plain
# requests get an upstream at 0 ms: the gateway always streams upstream, and paced chunks would be counted as
# gateway time against the emulator's unpaced plain answer. So two providers on the same emulator: KEYS (no
# pacing) behind CHAIN, STREAM_KEYS (paced) behind STREAM_CHAIN.
CHUNK_GAP = 0.005
KEYS = [f"bench-{name}" for name in ("a", "b", "c")]
STREAM_KEYS = [f"{key};gap={CHUNK_GAP}" for key in KEYS]
MODELS = ["echo-small", "echo-large"]
CHAIN = "auto"
STREAM_CHAIN = "auto-stream"
# Distinct conversation openings: requests reuse them round-robin, so sticky sessions are both created
# and reused, as with real clients.
CONVERSATIONS = 100
USER_TEXT = "conversation {k}: please answer with a short friendly sentence about routing requests across providers"
STREAM_TEXT = "conversation {k}: please answer with one short friendly routing sentence"


# --- the gateway side: freellm's ASGI app plus a SQL counter (runs inside each daphne process) --------


BARE_V1_ENV = "FREELLM_BENCH_BARE_V1"
WITHOUT_ENV = "FREELLM_BENCH_WITHOUT"  # --without: comma-separated WITHOUT_PARTS left out of the gateways
WITHOUT_PARTS = ("log", "mirror", "metrics")


GATEWAY_CPU = max(os.sched_getaffinity(0))  # --pin: the gateways' CPU
FLOOR_ENV = "FREELLM_BENCH_FLOOR"  # "<emulator chat URL> <keys> <stream keys>": /v1 served by the floor proxy
FLOOR_REDIS_ROUND_TRIPS = 3  # what the gateway makes per request: session touch, reserve, settle
TRANSPORT_ENV = "FREELLM_BENCH_TRANSPORT"  # "httpcore": the shared upstream client on httpx's own transport
KEEPALIVE_ENV = "FREELLM_BENCH_KEEPALIVE"  # N: that httpcore client keeps N idle connections


def _count_redis(counts: dict, commands: Counter[str], lock: threading.Lock) -> None:
    """Count, in this process, what redis-py sends: a round trip is one write of packed commands (one
    command, or a whole pipeline), and every command in it is counted by name. Commands a Lua script runs
    inside the server are not seen here (the MONITOR phase counts those)."""
    import redis.asyncio.connection as async_connection
    import redis.connection as sync_connection

    def name_of(args) -> str:
        first = args[0] if args else b"?"
        return (first.decode() if isinstance(first, bytes) else str(first)).split(" ")[0].lower()

    for cls in (async_connection.AbstractConnection,):
        send, pack = cls.send_packed_command, cls.pack_command

        async def send_packed_command(self, command, check_health=True, _send=send):
            with lock:
                counts["round_trips"] += 1
            return await _send(self, command, check_health)

        # The async pipeline packs each of its commands through pack_command too.
        def pack_command(self, *args, _pack=pack):
            with lock:
                commands[name_of(args)] += 1
            return _pack(self, *args)

        cls.send_packed_command, cls.pack_command = send_packed_command, pack_command

    cls = sync_connection.AbstractConnection
    sync_send, sync_pack, sync_pack_many = cls.send_packed_command, cls.pack_command, cls.pack_commands

    def sync_send_packed_command(self, command, check_health=True):
        with lock:
            counts["round_trips"] += 1
        return sync_send(self, command, check_health)

    def sync_pack_command(self, *args):
        with lock:
            commands[name_of(args)] += 1
        return sync_pack(self, *args)

    def sync_pack_commands(self, many):
        many = list(many)
        with lock:
            commands.update(name_of(args) for args in many)
        return sync_pack_many(self, many)

    cls.send_packed_command, cls.pack_command, cls.pack_commands = (
        sync_send_packed_command, sync_pack_command, sync_pack_commands)


def _what_if_http_client() -> None:
    """The transport what-if: the shared upstream client on httpcore (httpx's own pool, guarded as for a
    proxy), with FREELLM_BENCH_KEEPALIVE idle connections (default 100), instead of aiohttp."""
    transport, keepalive = os.environ.get(TRANSPORT_ENV, ""), os.environ.get(KEEPALIVE_ENV, "")
    if transport != "httpcore":
        return
    import httpx
    from django.conf import settings

    import routing.http
    from providers.netguard import GuardedTransport
    from routing.loops import PerLoop

    idle = int(keepalive) if keepalive else 100
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=idle, keepalive_expiry=30)

    def new_client(_: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=GuardedTransport(limits=limits), follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(settings.FREELLM_FIRST_TOKEN_TIMEOUT, connect=settings.FREELLM_CONNECT_TIMEOUT),
        )

    routing.http._clients = PerLoop(new_client, usable=lambda client: not client.is_closed)


def _count_gc(counts: dict[str, int]) -> None:
    """Time the garbage collector spends in this process (microseconds) and its full collections."""
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        counts["gc_us"] += int((time.perf_counter() - started[0]) * 1e6)
        counts["gc_full"] += info["generation"] == 2

    gc.callbacks.append(timed)


def _leave_out(parts: list[str]) -> None:
    """A what-if for --without: parts of the request's bookkeeping left out of this gateway process, to
    see what each costs (not how freellm runs). log: the RequestLog row; mirror: the admin's sticky-session
    mirror; metrics: the Prometheus counters and histograms."""
    if "log" in parts:
        from routing.api import exchange

        exchange.request_log_enqueue = lambda **row: None
    if "mirror" in parts:
        from routing.signals import session_served

        session_served.disconnect(dispatch_uid="analytics-session-mirror")
    if "metrics" in parts:
        from routing import metrics

        class Null:
            def labels(self, *args, **kwargs):
                return self

            def inc(self, *args, **kwargs) -> None:
                pass

            observe = set = dec = inc

        for name, value in vars(metrics).copy().items():
            if hasattr(value, "labels"):
                setattr(metrics, name, Null())


def _instrumented_application():
    """freellm.asgi.application, with every SQL statement, transaction, new DB connection and Redis round
    trip counted, and the counts served at STATS_PATH. With FREELLM_BENCH_BARE_V1 set (--bare-v1), /v1 goes
    to a Django ASGIHandler built without MIDDLEWARE: a what-if that measures what the middleware stack
    costs the API. FREELLM_BENCH_TRANSPORT / FREELLM_BENCH_KEEPALIVE build the shared upstream client
    another way (the transport what-ifs)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")
    from django.db.backends.signals import connection_created

    from freellm.asgi import application as freellm_app

    _what_if_http_client()
    _leave_out([part for part in os.environ.get(WITHOUT_ENV, "").split(",") if part])
    sql: Counter[str] = Counter()
    redis_commands: Counter[str] = Counter()
    counts = {"connections": 0, "transactions": 0, "round_trips": 0, "gc_us": 0, "gc_full": 0}
    lock = threading.Lock()
    _count_gc(counts)
    table = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)
    _count_redis(counts, redis_commands, lock)

    def count(execute, statement, params, many, context):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        match = table.search(statement)
        connection = context["connection"]
        # Outside atomic() every statement is a transaction of its own (Django runs in autocommit).
        own_transaction = connection.autocommit and not connection.in_atomic_block and verb != "BEGIN"
        with lock:
            sql[f"{verb} {match.group(1)}" if match else verb] += 1
            counts["transactions"] += own_transaction
        return execute(statement, params, many, context)

    def instrument(sender, connection, **kwargs):
        with lock:
            counts["connections"] += 1
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)
            # atomic() ends with connection.commit() / rollback(): one transaction each.
            for name in ("commit", "rollback"):
                method = getattr(connection, name)

                def ended(_method=method):
                    with lock:
                        counts["transactions"] += 1
                    return _method()

                setattr(connection, name, ended)

    connection_created.connect(instrument, weak=False)

    bare_v1 = None
    if os.environ.get(BARE_V1_ENV):
        from django.conf import settings
        from django.core.handlers.asgi import ASGIHandler

        saved, settings.MIDDLEWARE = settings.MIDDLEWARE, []
        try:
            bare_v1 = ASGIHandler()
        finally:
            settings.MIDDLEWARE = saved

    floor = _floor_proxy(os.environ[FLOOR_ENV]) if os.environ.get(FLOOR_ENV) else None

    async def application(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            from routing.config import _state

            with lock:
                payload = {
                    "sql": dict(sql),
                    **counts,
                    "redis_commands": dict(redis_commands),
                    "config_version": _state.config.version if _state.config else None,
                    "threads": threading.active_count(),
                }
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
            return
        if bare_v1 is not None and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await bare_v1(scope, receive, send)
            return
        if floor is not None and scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            await floor(scope, receive, send)
            return
        await freellm_app(scope, receive, send)

    return application


def _floor_proxy(spec: str):
    """The stack's floor, for comparison: the least a gateway on this stack does per chat request, and
    nothing of freellm's. It reads the body with the API edge's own reader (routing.api.edge, within the JSON
    body limit), parses it once (orjson), makes FLOOR_REDIS_ROUND_TRIPS script calls through the gateway's own
    Redis client (routing.redis) when Redis is configured, and one upstream call through the gateway's shared
    upstream client (routing.http: httpx over aiohttp, the SSRF guard), and relays the answer as it comes (a
    stream chunk by chunk). The same server serves it as the row's gateway."""
    import orjson
    from django.conf import settings

    from routing.api.edge import _read_body as read_body
    from routing.api.edge import body_limit
    from routing.http import get_client
    from routing.redis import redis_client

    url, keys, stream_keys = spec.split(" ")
    keys, stream_keys = keys.split(","), stream_keys.split(",")
    counter = itertools.count()
    scripts: dict[int, object] = {}  # one registered script per Redis client (one client per event loop)

    async def proxy(scope, receive, send):
        body = await read_body(receive, body_limit("application/json"))
        if body is None:
            return  # the client left
        stream = bool(orjson.loads(body).get("stream"))
        if settings.REDIS_URL:
            client = redis_client(settings.REDIS_URL)
            script = scripts.get(id(client)) or scripts.setdefault(id(client), client.register_script(
                "redis.call('HINCRBY', KEYS[1], 'n', 1) redis.call('EXPIRE', KEYS[1], 60) return 1"))
            for _ in range(FLOOR_REDIS_ROUND_TRIPS):
                await script(keys=[f"freellm:bench-floor:{os.getpid()}"])
        n = next(counter)
        key = (stream_keys if stream else keys)[n % len(keys)]
        upstream = get_client()
        request = upstream.build_request("POST", url, content=body, headers={
            "authorization": f"Bearer {key}", "content-type": "application/json"})
        response = await upstream.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(b"content-type", response.headers.get("content-type", "").encode())]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return proxy


def __getattr__(name: str):
    # daphne imports `tests.bench_gateway:application`; build it only then, so the script itself never
    # sets Django up in the benchmarking process.
    if name == "application":
        app = _instrumented_application()
        globals()["application"] = app
        return app
    raise AttributeError(name)


def _setup_database(slug: str, emulator_url: str) -> None:
    """Runs in a subprocess on the temp settings: provider, keys, chain and a unified key (printed)."""
    import django

    django.setup()
    from types import SimpleNamespace

    from django.contrib.auth import get_user_model

    from routing.services import api_key_create
    from tests.fixtures_gateway import add_chain, add_provider

    add_provider(SimpleNamespace(url=emulator_url), slug, KEYS, MODELS)
    add_chain(CHAIN, [f"{slug}/{model}" for model in MODELS])
    add_provider(SimpleNamespace(url=emulator_url), f"{slug}-stream", STREAM_KEYS, MODELS, path=f"{slug}/v1")
    add_chain(STREAM_CHAIN, [f"{slug}-stream/{model}" for model in MODELS])
    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(16))
    _, raw = api_key_create(user=user, name="bench")
    print(json.dumps({"api_key": raw}), flush=True)


def _add_keys(slug: str, total: int) -> None:
    """Subprocess: the provider gets upstream keys up to `total` (the emulator takes any key)."""
    import django

    django.setup()
    from providers.models import Provider, ProviderKey
    from routing.config import bump_config_version

    provider = Provider.objects.get(slug=slug)
    have = provider.keys.count()
    ProviderKey.objects.bulk_create(
        ProviderKey(provider=provider, label=f"{slug}-{i}", secret=f"bench-{i}")
        for i in range(have, total)
    )
    # bulk_create sends no post_save: bump the shared config version as the admin's save would.
    bump_config_version()


def _add_log_rows(count: int) -> None:
    """Subprocess: `count` old RequestLog rows, generated inside the database in one statement."""
    import django

    django.setup()
    from django.db import connection

    columns = ("created_at, request_id, endpoint, dialect, requested_model, provider, model, key_label, stream, "
               "status_code, outcome, attempts, trail, prompt_tokens, completion_tokens, latency_ms, session_id, "
               "switched, error")
    values = ("'', 'chat', 'openai', 'auto', 'old', 'old-model', 'old-0', {false}, 200, 'ok', 1, '[]', 10, 5, 40, "
              "'', '', ''")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO analytics_requestlog ({columns}) SELECT now() - interval '1 day' - g * interval '1 second', "
                + values.format(false="false") + " FROM generate_series(1, %s) AS g", [count])
            cursor.execute("ANALYZE analytics_requestlog")
        else:
            cursor.execute(
                f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
                f"INSERT INTO analytics_requestlog ({columns}) SELECT datetime('now', '-1 day', '-' || n || ' seconds'), "
                + values.format(false="0") + " FROM g", [count])


# --- processes ---------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: children get SIGTERM if the benchmark itself is killed hard, so nothing is left running.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Processes:
    """Everything the benchmark started, stopped in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, label: str, argv: list[str], *, env: dict[str, str], log: Path, **kwargs) -> subprocess.Popen:
        with log.open("ab") as stderr:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=stderr, preexec_fn=_die_with_parent, **kwargs)
        self.started.append((label, proc))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.started = [(label, p) for label, p in self.started if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started.clear()


def start_emulator(procs: Processes, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """The emulator app under uvicorn, in its own process (its own GIL).

    uvicorn binds the port itself here rather than through ``python -m tests.emulator``: that entry point
    hands uvicorn a socket made with proto 0, so asyncio never sets TCP_NODELAY on its connections and
    every keep-alive answer after the first waits ~40 ms for a delayed ACK (Nagle), which would swamp
    what this script measures.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = procs.spawn(
        "emulator",
        [sys.executable, "-m", "uvicorn", "--factory", "tests.emulator.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--lifespan", "off"],
        env=env, log=log, stdout=subprocess.DEVNULL,
    )
    _wait_until_up(proc, f"{url}/bench/v1/models", log, "emulator")
    return proc, url


def _wait_until_up(proc: subprocess.Popen, probe: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log.read_text()[-2000:]}")
        try:
            httpx.get(probe, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in 60 s; see {log}")


# --- load ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    label: str  # "emulator" | "gateway"
    urls: list[str]  # chat completions URLs; request i goes to urls[i % len(urls)]
    model: str
    keys: list[str]  # bearer tokens, rotated like the gateway rotates upstream keys
    stream_model: str = ""  # streams ask for this model (default: model)
    stream_keys: list[str] = field(default_factory=list)  # and send these tokens (default: keys)
    bodies: dict[tuple[int, bool], bytes] = field(default_factory=dict)
    system: str = "You are a benchmark."  # the large-prompt row makes this an agent's worth of code

    def request(self, i: int, stream: bool) -> tuple[str, bytes, dict]:
        k = i % CONVERSATIONS
        body = self.bodies.get((k, stream))
        if body is None:
            # Encoded once per conversation, so the load generator spends its CPU on the sockets.
            model = (self.stream_model or self.model) if stream else self.model
            body = self.bodies[k, stream] = json.dumps({"model": model, "stream": stream, "messages": [
                {"role": "system", "content": self.system},
                {"role": "user", "content": (STREAM_TEXT if stream else USER_TEXT).format(k=k)},
            ]}).encode()
        keys = (self.stream_keys or self.keys) if stream else self.keys
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}", "Content-Type": "application/json"}
        return self.urls[i % len(self.urls)], body, headers


@dataclass
class Phase:
    name: str
    target: str
    stream: bool
    requests: int
    concurrency: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # successful requests only, seconds
    ttfb: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    failovers: int = 0  # answers with X-FreeLLM-Attempts > 1
    cpu: dict[str, float] = field(default_factory=dict)  # process label → CPU seconds during the phase
    done: int = 0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def cpu_ms(self, label: str) -> float:
        return 1000 * self.cpu.get(label, 0.0) / max(1, self.done)

    def as_json(self) -> dict:
        return {"name": self.name, "target": self.target, "stream": self.stream, "requests": self.requests,
                "concurrency": self.concurrency, "ok": self.ok, "errors": dict(self.errors),
                "wall_s": round(self.wall, 3), "rate": round(self.rate, 1),
                "p50_ms": _r(pct(self.latencies, 50)), "p95_ms": _r(pct(self.latencies, 95)),
                "p99_ms": _r(pct(self.latencies, 99)), "ttfb_p50_ms": _r(pct(self.ttfb, 50)),
                "cpu_ms_per_request": {label: round(self.cpu_ms(label), 3) for label in self.cpu}}


# The processes whose CPU a phase measures (CpuMeter): the gateways, the emulator, Redis and this script.
PROCESS_LABELS = ("gateway", "emulator", "redis", "client")


def _scale_ceiling(phase: Phase) -> float:
    """What more gateway processes can give at most over one here: the client, the emulator and Redis run on the
    same CPUs, so no number of gateways goes beyond CPUs / (their CPU time per request and the gateway's)."""
    spent = sum(phase.cpu_ms(label) for label in PROCESS_LABELS)
    return (os.cpu_count() or 1) * 1000 / spent / phase.rate if spent and phase.rate else math.inf


def _r(value: float, digits: int = 2) -> float | None:
    return None if value != value else round(value, digits)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000


LOAD_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, IndexError, TypeError)


async def one_request(session: aiohttp.ClientSession, target: Target, i: int, phase: Phase) -> None:
    url, body, headers = target.request(i, phase.stream)
    began = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                # The error's own words, so that a degraded row says why (the gateway's error message).
                try:
                    message = json.loads(await response.read())["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = ""
                trail = response.headers.get("x-freellm-trail", "")
                phase.errors[f"HTTP {response.status} {message[:160]} {trail[:300]}".rstrip()] += 1
                return
            if not phase.stream:
                content = json.loads(await response.read())["choices"][0]["message"]["content"] or ""
                if not content.startswith("Echo:"):
                    phase.errors["unexpected answer"] += 1
                    return
                phase.latencies.append(time.perf_counter() - began)
            else:
                first = None
                tail = b""
                async for chunk in response.content.iter_any():
                    if first is None and chunk:
                        first = time.perf_counter()
                    tail = (tail + chunk)[-64:]
                if b"data: [DONE]" not in tail:
                    phase.errors["stream without [DONE]"] += 1
                    return
                phase.latencies.append(time.perf_counter() - began)
                phase.ttfb.append((first or time.perf_counter()) - began)
            if int(response.headers.get("x-freellm-attempts", "1")) > 1:
                phase.failovers += 1
    except LOAD_ERRORS as exc:
        phase.errors[f"{type(exc).__name__}: {str(exc)[:60]}" if str(exc) else type(exc).__name__] += 1
    finally:
        phase.done += 1


class CpuMeter:
    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        snap = {label: sum(_cpu_seconds(pid) for pid in pids) for label, pids in self.pids.items()}
        times = os.times()
        snap["client"] = times.user + times.system
        return snap


async def progress(phase: Phase, stop: asyncio.Event) -> None:
    tty = sys.stderr.isatty()
    began = time.perf_counter()
    interval = 0.5 if tty else 3.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - began
        line = (f"  {phase.name}: {phase.done}/{phase.requests}  {phase.done / elapsed:.0f} req/s  "
                f"errors {sum(phase.errors.values())}")
        print(("\r" + line.ljust(78)) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)


async def drive(session: aiohttp.ClientSession, target: Target, phase: Phase, cpu: CpuMeter, *,
                show_progress: bool = True) -> Phase:
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < phase.requests:
            await one_request(session, target, i, phase)

    stop = asyncio.Event()
    reporter = asyncio.create_task(progress(phase, stop)) if show_progress else None
    cpu_before = cpu.snapshot()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.wall = time.perf_counter() - began
    cpu_after = cpu.snapshot()
    phase.cpu = {label: cpu_after[label] - cpu_before[label] for label in cpu_before}
    stop.set()
    if reporter is not None:
        await reporter
    return phase


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- steady-state bookkeeping ------------------------------------------------------------------------


class Database:
    """The run's own database: a SQLite file in the temp dir, or with --postgres a temporary database
    created on that server (and dropped at the end)."""

    def __init__(self, tmp: Path, postgres_url: str = "") -> None:
        self.sqlite_path = tmp / "bench.sqlite3"
        self.server_url = postgres_url
        self.name = f"freellm_bench_{os.getpid()}"
        self.created = False
        # What the benchmark itself did in the run's database (subtracted from the server's counters).
        self.own_sessions = 0
        self.own_transactions = 0
        if postgres_url:
            from urllib.parse import urlsplit, urlunsplit

            self.url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{self.name}"))
        else:
            self.url = f"sqlite:///{self.sqlite_path}"

    def _server(self):
        import psycopg

        return psycopg.connect(self.server_url, autocommit=True, connect_timeout=5)

    def create(self) -> None:
        if self.server_url:
            with self._server() as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.created = True

    def drop(self) -> None:
        if self.created:
            with self._server() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def log_rows(self) -> int:
        query = "SELECT COUNT(*) FROM analytics_requestlog"
        if self.server_url:
            import psycopg

            # A short connection of its own: one session and one transaction, flushed to the server's
            # statistics when it closes, and subtracted from them.
            self.own_sessions += 1
            self.own_transactions += 1
            with psycopg.connect(self.url, connect_timeout=5) as conn:
                return conn.execute(query).fetchone()[0]
        with sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=20) as db:
            return db.execute(query).fetchone()[0]

    def failures(self) -> list[tuple[str, int]]:
        """What the request log says went wrong, for answers of 500 and above: (error text, rows)."""
        query = ("SELECT error, COUNT(*) FROM analytics_requestlog WHERE status_code >= 500 "
                 "GROUP BY error ORDER BY COUNT(*) DESC LIMIT 5")
        if self.server_url:
            import psycopg

            self.own_sessions += 1
            self.own_transactions += 1
            with psycopg.connect(self.url, connect_timeout=5) as conn:
                return conn.execute(query).fetchall()
        with sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=20) as db:
            return db.execute(query).fetchall()

    def server_stats(self) -> dict[str, int] | None:
        """pg_stat_database for the run's database (read from the server's own database, so the reading
        is not counted), minus what the benchmark itself did there. None for SQLite."""
        if not self.server_url:
            return None
        own_sessions, own_transactions = self.own_sessions, self.own_transactions
        with self._server() as conn:
            sessions, transactions, backends = conn.execute(
                "SELECT sessions, xact_commit + xact_rollback, numbackends FROM pg_stat_database "
                "WHERE datname = %s", (self.name,)).fetchone()
        return {"sessions": sessions - own_sessions, "transactions": transactions - own_transactions,
                "backends": backends}


@dataclass
class Snapshot:
    log_rows: int
    gateway: dict  # the gateways' own counters, summed: connections, transactions, round_trips
    sql: Counter[str]
    redis_commands: Counter[str]  # sent by the gateways' redis-py clients
    threads: int
    config_versions: list[str | None]
    redis_server: Counter[str]  # server-wide INFO commandstats (other clients of that server count too)
    postgres: dict[str, int] | None = None  # pg_stat_database of the run's database


@dataclass
class Bookkeeping:
    """What one gateway phase cost besides time: the difference of two snapshots."""

    phase: str
    requests: int
    before: Snapshot
    after: Snapshot

    @property
    def log_rows(self) -> int:
        return self.after.log_rows - self.before.log_rows

    @property
    def sql(self) -> Counter[str]:
        return self.after.sql - self.before.sql

    @property
    def redis_commands(self) -> Counter[str]:
        return self.after.redis_commands - self.before.redis_commands

    @property
    def redis_server(self) -> Counter[str]:
        return self.after.redis_server - self.before.redis_server

    def gateway(self, name: str) -> int:
        return self.after.gateway[name] - self.before.gateway[name]

    def postgres(self, name: str) -> int | None:
        if self.before.postgres is None or self.after.postgres is None:
            return None
        return self.after.postgres[name] - self.before.postgres[name]

    def per_request(self) -> dict[str, float | None]:
        n = max(1, self.requests)
        sessions, transactions = self.postgres("sessions"), self.postgres("transactions")
        return {
            "sql_statements": sum(self.sql.values()) / n,
            "db_transactions_gateway_view": self.gateway("transactions") / n,
            "db_connects_gateway_view": self.gateway("connections") / n,
            "pg_sessions": None if sessions is None else sessions / n,
            "pg_transactions": None if transactions is None else transactions / n,
            "redis_round_trips": self.gateway("round_trips") / n,
            "redis_commands_sent": sum(self.redis_commands.values()) / n,
            "redis_commands_server_wide": sum(self.redis_server.values()) / n,
            "log_rows": self.log_rows / n,
            "gc_ms": self.gateway("gc_us") / 1000 / n,
            "gc_full_collections": self.gateway("gc_full"),
        }

    def as_json(self) -> dict:
        return {"phase": self.phase, "requests": self.requests, "per_request": self.per_request(),
                "sql": dict(self.sql), "redis_commands_sent": dict(self.redis_commands),
                "redis_commands_server_wide": dict(self.redis_server),
                "pg_backends_after": (self.after.postgres or {}).get("backends")}


class Ledger:
    """Reads the gateways' counters, the RequestLog table, PostgreSQL's and Redis' statistics."""

    def __init__(self, database: Database, redis_client=None) -> None:
        self.database = database
        self.redis = redis_client

    def _redis_server(self) -> Counter[str]:
        if self.redis is None:
            return Counter()
        stats = self.redis.info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                        if name not in ("cmdstat_info", "cmdstat_scan")})

    async def snapshot(self, session: aiohttp.ClientSession, gateway_urls: list[str]) -> Snapshot:
        postgres = await asyncio.to_thread(self.database.server_stats)
        snap = Snapshot(await asyncio.to_thread(self.database.log_rows), Counter(), Counter(), Counter(), 0, [],
                        await asyncio.to_thread(self._redis_server), postgres)
        for url in gateway_urls:
            async with session.get(url + STATS_PATH) as response:
                data = await response.json()
            snap.sql.update(data["sql"])
            snap.redis_commands.update(data["redis_commands"])
            snap.gateway.update({k: data[k] for k in ("connections", "transactions", "round_trips", "gc_us", "gc_full")})
            snap.threads += data["threads"]
            snap.config_versions.append(data["config_version"])
        return snap

    async def settle(self, expected_rows: int, timeout: float = 15.0) -> None:
        """Wait for the gateways' background log writes (until the expected rows are there, or the count
        stops moving for a second), then for PostgreSQL's statistics (each backend flushes them at most
        once a second) to stop moving."""
        deadline = time.monotonic() + timeout
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            rows = await asyncio.to_thread(self.database.log_rows)
            if rows >= expected_rows:
                await asyncio.sleep(0.3)  # the sticky-session mirror writes on its own short delay
                break
            if rows != last:
                last, still_since = rows, time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break
            await asyncio.sleep(0.1)
        if not self.database.server_url:
            return
        deadline = time.monotonic() + 6.0
        seen, still_since = None, time.monotonic()
        while time.monotonic() < deadline:
            stats = await asyncio.to_thread(self.database.server_stats)
            now = (stats["sessions"], stats["transactions"])
            if now != seen:
                seen, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= 1.2:
                return
            await asyncio.sleep(0.3)


class RedisMonitor:
    """MONITOR on the run's Redis, counting the commands run in its database (those of Lua scripts
    included, which INFO commandstats also counts but a client never sends), without our own."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5)
        self.db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.by_client: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.ready = threading.Event()

    def _listen(self) -> None:
        import redis

        with self.client.monitor() as monitor:
            self.ready.set()
            while not self.stop.is_set():
                try:
                    event = monitor.next_command()
                except (redis.TimeoutError, TimeoutError):
                    continue
                except redis.ConnectionError:
                    return
                if int(event.get("db", -1)) != self.db:
                    continue
                name = (event.get("command") or "?").split(" ", 1)[0].strip('"').lower()
                (self.in_scripts if event.get("client_type") == "lua" else self.by_client)[name] += 1

    def __enter__(self) -> RedisMonitor:
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


# --- profiling (optional) ------------------------------------------------------------------------------


class Profiler:
    def __init__(self, out_dir: Path | None, pids: list[int]) -> None:
        self.out_dir = out_dir
        self.pids = pids
        self.running: list[tuple[subprocess.Popen, Path]] = []
        self.binary = shutil.which("py-spy") if out_dir else None
        if out_dir and not self.binary:
            raise SystemExit("--profile needs py-spy on PATH (pip install py-spy; it is not a project dependency)")

    def start(self, phase: str) -> None:
        if not self.out_dir:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for n, pid in enumerate(self.pids):
            out = self.out_dir / f"gateway{n}-{phase}.txt"
            proc = subprocess.Popen(
                [self.binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--gil", "--format", "raw",
                 "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )
            self.running.append((proc, out))

    def stop(self) -> list[Path]:
        outs = []
        for proc, out in self.running:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if out.exists():
                outs.append(out)
        self.running.clear()
        return outs


_FRAME_FILE = re.compile(r"\(([^()]+?):\d+\)$")
_PROJECT = ("routing", "providers", "analytics", "freellm")


def _frame_package(frame: str) -> str:
    """py-spy names files relative to their sys.path entry: the first component is the package."""
    match = _FRAME_FILE.search(frame)
    return match.group(1).split("/", 1)[0].removesuffix(".py") if match else "?"


def summarize_profile(paths: list[Path]) -> list[str]:
    """Share of samples by the package of the innermost frame (self time), and the heaviest freellm frames
    including what they call."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            samples, frames = int(n), stack.split(";")
            total += samples
            own[_frame_package(frames[-1])] += samples
            for frame in {re.sub(r":\d+\)$", ")", f) for f in frames if _frame_package(f) in _PROJECT}:
                inclusive[frame] += samples
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; self time by package:"]
    lines += [f"    {100 * n / total:5.1f}%  {label}" for label, n in own.most_common(14)]
    lines.append("  heaviest freellm frames (inclusive):")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(12)]
    return lines


# --- the run ---------------------------------------------------------------------------------------------


class RedisKeys:
    """Remembers which keys a Redis database had, to delete only the ones this run made."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url)
        self.before = set(self.client.scan_iter(count=1000))

    def server_pid(self) -> int | None:
        """The server's pid when it runs on this machine (for its CPU time), else None."""
        host = self.client.connection_pool.connection_kwargs.get("host", "")
        if host not in ("127.0.0.1", "localhost", "::1"):
            return None
        return int(self.client.info("server").get("process_id", 0)) or None

    def cleanup(self) -> int:
        created = [k for k in self.client.scan_iter(count=1000) if k not in self.before]
        for start in range(0, len(created), 500):
            self.client.delete(*created[start:start + 500])
        return len(created)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_step(argv: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


# Phases a row can measure: sequential added latency (interleaved with the emulator direct), time to first
# byte of a stream alone (interleaved too), and throughput at two concurrencies, plain and streaming.
SEQ, TTFB = "seq", "ttfb"
PLAIN = {"c32": 32, "c128": 128}
STREAMS = {"s32": 32, "s128": 128}


@dataclass
class Row:
    label: str
    processes: int
    server: str
    phases: dict[str, Phase] = field(default_factory=dict)
    direct: dict[str, Phase] = field(default_factory=dict)  # the emulator alone, same shape
    books: dict[str, Bookkeeping] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)  # "idle" / "after", MiB summed over the processes
    warnings: Counter[str] = field(default_factory=Counter)  # WARNING+ log lines during the row, by logger
    floor: bool = False  # the stack's floor (_floor_proxy), not freellm

    def added(self, part: str, p: float, ttfb: bool = False) -> float:
        mine, base = self.phases.get(part), self.direct.get(part)
        if mine is None or base is None:
            return float("nan")
        return pct(mine.ttfb if ttfb else mine.latencies, p) - pct(base.ttfb if ttfb else base.latencies, p)

    def as_json(self) -> dict:
        return {
            "label": self.label, "processes": self.processes, "server": self.server, "floor": self.floor,
            "sequential_added_ms": {f"p{p}": _r(self.added(SEQ, p)) for p in (50, 95, 99)},
            "ttfb_added_ms": {f"p{p}": _r(self.added(TTFB, p, ttfb=True)) for p in (50, 95, 99)},
            "throughput": {part: round(phase.rate, 1) for part, phase in self.phases.items() if part not in (SEQ, TTFB)},
            "rss_mib": {k: _r(v, 1) for k, v in self.rss.items()},
            "log_warnings": dict(self.warnings),
            "phases": {part: phase.as_json() for part, phase in self.phases.items()},
            "direct": {part: phase.as_json() for part, phase in self.direct.items()},
            "bookkeeping": {part: book.as_json() for part, book in self.books.items()},
        }


@dataclass
class Gateway:
    proc: subprocess.Popen
    url: str
    server: str


class Bench:
    """One run: the environment, the processes it started and the rows it measured."""

    def __init__(self, args, tmp: Path, procs: Processes, env: dict[str, str], database: Database,
                 redis: RedisKeys | None) -> None:
        self.args, self.tmp, self.procs, self.env, self.database, self.redis = args, tmp, procs, env, database, redis
        self.logs: list[Path] = []
        self.rows: list[Row] = []
        self.monitor: dict | None = None
        self.profiles: dict[str, list[Path]] = {}
        self.slug = f"bench{os.getpid()}"
        self.system = Target.system  # the system prompt every request sends (see the large-prompt row)

    # -- processes

    def start_gateway(self, server: str, extra_env: dict[str, str] | None = None) -> Gateway:
        port = _free_port()
        log = self.tmp / f"gateway{len(self.logs)}-{server}.log"
        self.logs.append(log)
        bin_dir = Path(sys.executable).parent
        if server == "uvicorn":
            argv = [sys.executable, "-m", "uvicorn", "tests.bench_gateway:application", "--host", "127.0.0.1",
                    "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
                    "--no-access-log", "--log-level", "warning"]
        else:
            argv = [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), "tests.bench_gateway:application"]
        proc = self.procs.spawn(f"gateway-{server}", argv, env={**self.env, **(extra_env or {})}, log=log,
                                stdout=subprocess.DEVNULL)
        if self.args.pin:
            # Before the interpreter starts: its threads inherit the main thread's CPU.
            os.sched_setaffinity(proc.pid, {GATEWAY_CPU})
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, url + STATS_PATH, log, f"gateway ({server})")
        say(f"gateway ({server}{', ' + ', '.join(f'{k}={v}' for k, v in (extra_env or {}).items()) if extra_env else ''}"
            f", pid {proc.pid}) on {url}")
        return Gateway(proc, url, server)

    def log_warnings(self) -> Counter[str]:
        """WARNING+ lines of the processes' logs by logger (a row that degraded, say to local quota state
        when Redis refused connections, must say so next to its figures)."""
        found: Counter[str] = Counter()
        for log in self.logs:
            if log.exists():
                found.update(m.group(1) for m in re.finditer(r"\b(?:WARNING|ERROR|CRITICAL) ([\w.]+)",
                                                             log.read_text(errors="replace")))
        return found

    def stop_gateway(self, gateway: Gateway) -> None:
        self.procs.stop(gateway.proc)

    # -- measuring

    def targets(self, gateways: list[Gateway]) -> tuple[Target, Target]:
        direct = Target("emulator", [f"{self.emulator_url}/{self.slug}/v1/chat/completions"], MODELS[0], KEYS,
                        stream_keys=STREAM_KEYS, system=self.system)
        through = Target("gateway", [f"{g.url}/v1/chat/completions" for g in gateways], CHAIN, [self.api_key],
                         stream_model=STREAM_CHAIN, system=self.system)
        return direct, through

    def meter(self, gateways: list[Gateway]) -> CpuMeter:
        pids = {"gateway": [g.proc.pid for g in gateways], "emulator": [self.emulator.pid]}
        if self.redis is not None and (redis_pid := self.redis.server_pid()):
            pids["redis"] = [redis_pid]
        return CpuMeter(pids)

    async def measured(self, session, gateways: list[Gateway], phase: Phase, target: Target, cpu: CpuMeter,
                       row: Row, part: str) -> Phase:
        """A gateway phase with its bookkeeping (SQL, transactions, sessions, Redis) around it."""
        urls = [g.url for g in gateways]
        before = await self.ledger.snapshot(session, urls)
        profiling = self.profiler is not None and phase.concurrency > 1
        if profiling:
            self.profiler.pids = [g.proc.pid for g in gateways]
            self.profiler.start(f"{row.label}-{part}".replace(" ", "_").replace("/", "_"))
        await drive(session, target, phase, cpu)
        if profiling:
            self.profiles[f"{row.label}: {phase.name}"] = self.profiler.stop()
        await self.ledger.settle(before.log_rows + phase.ok)
        row.books[part] = Bookkeeping(phase.name, phase.requests, before, await self.ledger.snapshot(session, urls))
        return phase

    async def measure(self, session, row: Row, gateways: list[Gateway], parts: list[str], *,
                      direct_throughput: bool = False) -> Row:
        args = self.args
        direct, through = self.targets(gateways)
        cpu = self.meter(gateways)
        row.rss["idle"] = sum(_rss_mib(g.proc.pid) for g in gateways)
        warnings_before = self.log_warnings()
        say(f"== {row.label}: warming up ({args.warmup} requests)")
        for stream in (False, True):
            await drive(session, through, Phase("warm-up", "gateway", stream, args.warmup, 32), cpu, show_progress=False)
        await self.ledger.settle(0, timeout=3)
        for part in parts:
            if part in (SEQ, TTFB):
                stream = part == TTFB
                total = args.serial if part == SEQ else max(args.rounds, args.serial // 4)
                per_round = max(1, total // args.rounds)
                kind = "stream alone" if stream else "sequential"
                mine = Phase(f"gateway {kind}", "gateway", stream, 0, 1)
                base = Phase(f"emulator {kind}", "emulator", stream, 0, 1)
                say(f"{row.label}: {kind}, {args.rounds} rounds of {per_round} requests each way")
                before = await self.ledger.snapshot(session, [g.url for g in gateways])
                # Interleaved, so both sides see the same machine (other jobs come and go).
                for _ in range(args.rounds):
                    for phase, target in ((base, direct), (mine, through)):
                        one = await drive(session, target, Phase(phase.name, phase.target, stream, per_round, 1), cpu,
                                          show_progress=False)
                        phase.latencies += one.latencies
                        phase.ttfb += one.ttfb
                        phase.errors.update(one.errors)
                        phase.failovers += one.failovers
                        phase.done += one.done
                        phase.requests += one.requests
                        phase.wall += one.wall
                        for label, seconds in one.cpu.items():
                            phase.cpu[label] = phase.cpu.get(label, 0.0) + seconds
                await self.ledger.settle(before.log_rows + mine.ok)
                row.books[part] = Bookkeeping(mine.name, mine.requests, before,
                                              await self.ledger.snapshot(session, [g.url for g in gateways]))
                row.phases[part], row.direct[part] = mine, base
                continue
            stream = part in STREAMS
            c = STREAMS.get(part) or PLAIN[part]
            kind = "stream" if stream else "chat"
            if direct_throughput:
                say(f"{row.label}: emulator {kind} c={c}: {args.requests} requests")
                row.direct[part] = await drive(session, direct, Phase(f"emulator {kind} c={c}", "emulator", stream,
                                                                       args.requests, c), cpu)
            say(f"{row.label}: gateway {kind} c={c}: {args.requests} requests")
            row.phases[part] = await self.measured(
                session, gateways, Phase(f"gateway {kind} c={c}", "gateway", stream, args.requests, c), through, cpu,
                row, part)
        row.rss["after"] = sum(_rss_mib(g.proc.pid) for g in gateways)
        row.warnings = self.log_warnings() - warnings_before
        self.rows.append(row)
        return row

    async def monitor_phase(self, session, gateways: list[Gateway]) -> None:
        """A short, separate phase under Redis MONITOR (it slows the server, so nothing timed runs under
        it): the commands run in the run's database per request, those inside Lua scripts included."""
        if self.redis is None:
            return
        n = self.args.monitor
        _, through = self.targets(gateways)
        cpu = self.meter(gateways)
        say(f"Redis MONITOR phase: {n} plain + {n} streaming requests at c=4")
        with RedisMonitor(self.redis.url) as monitor:
            before = await self.ledger.snapshot(session, [g.url for g in gateways])
            for stream in (False, True):
                await drive(session, through, Phase("monitor", "gateway", stream, n, 4), cpu, show_progress=False)
            await self.ledger.settle(before.log_rows + 2 * n)
            after = await self.ledger.snapshot(session, [g.url for g in gateways])
        # The benchmark's own: the ledger's INFO and the MONITOR itself.
        by_client = Counter({k: v for k, v in monitor.by_client.items() if k not in ("info", "monitor")})
        self.monitor = {
            "requests": 2 * n,
            "round_trips": after.gateway["round_trips"] - before.gateway["round_trips"],
            "commands_from_clients": dict(by_client), "commands_in_scripts": dict(monitor.in_scripts),
        }

    async def run(self) -> None:
        args = self.args
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        self.ledger = Ledger(self.database, self.redis.client if self.redis else None)
        self.profiler = Profiler(Path(args.profile), []) if args.profile else None
        other = "uvicorn" if args.server == "daphne" else "daphne"
        gateways = [self.start_gateway(args.server) for _ in range(args.processes)]
        limit = aiohttp.TCPConnector(limit=256, limit_per_host=256, force_close=False)
        async with aiohttp.ClientSession(connector=limit, timeout=aiohttp.ClientTimeout(total=120)) as session:
            shape = f"{args.processes} {args.server} process{'es' if args.processes > 1 else ''}"
            await self.measure(session, Row(shape, args.processes, args.server), gateways,
                               [SEQ, TTFB, *PLAIN, *STREAMS], direct_throughput=True)
            await self.monitor_phase(session, gateways)
            # The same server with none of freellm's code on /v1 (_floor_proxy): what the stack alone costs.
            floor = self.start_gateway(args.server, {FLOOR_ENV: " ".join((
                f"{self.emulator_url}/{self.slug}/v1/chat/completions", ",".join(KEYS), ",".join(STREAM_KEYS)))})
            label = f"floor: {args.server}, proxy" + (f" + {FLOOR_REDIS_ROUND_TRIPS} Redis RT" if self.redis else "")
            await self.measure(session, Row(label, 1, args.server, floor=True), [floor],
                               [SEQ, TTFB, "c32", "c128", "s128"])
            self.stop_gateway(floor)
            if not args.no_variants:
                # Scale-out: one process more than the main shape, or one alone when it has several.
                if args.pin:
                    say("--pin: no scale-out row (the gateways would share one CPU)")
                elif args.processes == 1:
                    extra = self.start_gateway(args.server)
                    await self.measure(session, Row(f"2 {args.server} processes", 2, args.server),
                                       [*gateways, extra], ["c32", "c128", "s128"])
                    self.stop_gateway(extra)
                else:
                    await self.measure(session, Row(f"1 {args.server} process", 1, args.server), gateways[:1],
                                       ["c32", "c128", "s128"])
                variants = [(f"1 {other} process" + (" (httptools, uvloop)" if other == "uvicorn" else ""), other, {}),
                            ("httpx over httpcore transport", args.server, {TRANSPORT_ENV: "httpcore"}),
                            ("httpcore, 256 idle conns", args.server,
                             {TRANSPORT_ENV: "httpcore", KEEPALIVE_ENV: "256"})]
                for label, server, extra_env in variants:
                    gateway = self.start_gateway(server, extra_env)
                    await self.measure(session, Row(label, 1, server), [gateway], [SEQ, "c32", "c128", "s128"])
                    self.stop_gateway(gateway)
            if args.prompt_kb:
                # What a coding agent sends: a system prompt and files, here about --prompt-kb KB of code.
                self.system = agent_prompt(args.prompt_kb)
                await self.measure(session, Row(f"{shape}, {args.prompt_kb} KB prompts", args.processes, args.server),
                                   gateways, [SEQ, "c32"])
                self.system = Target.system
            if args.keys > len(KEYS):
                say(f"adding upstream keys up to {args.keys}")
                run_step([sys.executable, "-m", "tests.bench_gateway", "_keys", self.slug, str(args.keys)], self.env,
                         "adding keys")
                # The gateways look at the config version at most once a second.
                await asyncio.sleep(1.5)
                await self.measure(session, Row(f"{shape}, {args.keys:,} keys", args.processes, args.server),
                                   gateways, [SEQ, "c32", "s128"])
            if args.log_rows:
                say(f"inserting {args.log_rows:,} old RequestLog rows")
                began = time.monotonic()
                run_step([sys.executable, "-m", "tests.bench_gateway", "_rows", str(args.log_rows)], self.env,
                         "inserting log rows")
                say(f"  inserted in {time.monotonic() - began:.1f} s")
                label = f"{shape}, {args.keys:,} keys + {args.log_rows:,} log rows"
                await self.measure(session, Row(label, args.processes, args.server), gateways, [SEQ, "c32", "s128"])


def agent_prompt(kb: int) -> str:
    """About ``kb`` KB of source code under a one-line instruction, mostly ASCII like a real repository."""
    line = "def handler_{i}(request):  # route the call, then log it\n    return route(request, attempt={i})\n"
    lines, size = ["You are a coding agent. The repository follows."], 0
    while size < kb * 1024:
        lines.append(line.format(i=len(lines)))
        size += len(lines[-1])
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".1f", dash: str = "-") -> str:
    return dash if value is None or value != value else format(value, spec)


def _shape(args) -> tuple[str, str, str, str]:
    store = f"Redis {args.redis}" if args.redis else "in-process (embedded mode, no Redis)"
    database = "PostgreSQL (temporary database)" if args.postgres else "SQLite (temp file)"
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine, store, database


def results(bench: Bench, load: tuple[tuple[float, ...], tuple[float, ...]]) -> dict:
    when, machine, store, database = _shape(bench.args)
    ceiling = bench.rows[0].direct.get("c128") if bench.rows else None
    return {
        "date": when, "machine": machine, "store": store, "database": database,
        "load_average": {"before": load[0][0], "after": load[1][0]},
        "settings": vars(bench.args),
        "load_generator_ceiling": ceiling.as_json() if ceiling else None,
        "rows": [row.as_json() for row in bench.rows], "redis_monitor": bench.monitor,
    }


def report(bench: Bench, load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    args, rows = bench.args, bench.rows
    out = print
    when, machine, store, database = _shape(args)
    out()
    out(f"freellm gateway benchmark, {when}; quota/session store: {store}; database: {database}; request log on"
        + ("; WHAT-IF --bare-v1: /v1 served without Django MIDDLEWARE" if args.bare_v1 else "")
        + (f"; WHAT-IF --without {args.without}: left out of the gateways" if args.without else ""))
    out(f"machine: {machine}; client, emulator, Redis, PostgreSQL and gateways share it; "
        f"load average before {load[0][0]:.2f}, after {load[1][0]:.2f} (1 min)")
    out(f"{args.requests} requests per throughput phase; sequential: {args.serial} each way in {args.rounds} "
        f"interleaved rounds; streams: 12 chunks {CHUNK_GAP * 1000:.0f} ms apart; 'added' = gateway minus emulator direct")
    main = rows[0]
    ceiling = main.direct.get("c128")
    if ceiling:
        out(f"load generator (aiohttp) ceiling, against the emulator direct at c=128: {ceiling.rate:.0f} req/s, "
            f"client {ceiling.cpu_ms('client'):.2f} ms CPU/request; streams c=128: "
            f"{main.direct['s128'].rate:.0f}/s" if "s128" in main.direct else "")
    out()
    head = (f"{'configuration':<44}{'seq +p50/p95/p99 ms':>21}{'req/s c32':>10}{'c128':>6}{'streams/s c32/c128':>19}"
            f"{'+TTFB':>7}{'CPU ms/req':>11}{'RSS MiB idle>after':>19}{'PG sess/req':>12}{'PG xact/req':>12}"
            f"{'Redis RT/req':>13}{'cmds/req':>9}{'warn':>6}")
    out(head)
    out("-" * len(head))
    for row in rows:
        seq = "/".join(_fmt(row.added(SEQ, p), "+.1f") for p in (50, 95, 99)) if SEQ in row.phases else "-"
        rate = {part: (_fmt(row.phases[part].rate, ".0f") if part in row.phases else "-") for part in (*PLAIN, *STREAMS)}
        book = row.books.get("c32")
        per = book.per_request() if book else {}
        cpu = _fmt(row.phases["c32"].cpu_ms("gateway"), ".2f") if "c32" in row.phases else "-"
        rss = f"{_fmt(row.rss.get('idle'), '.0f')}>{_fmt(row.rss.get('after'), '.0f')}"
        out(f"{row.label[:43]:<44}{seq:>21}{rate['c32']:>10}{rate['c128']:>6}{rate['s32'] + ' / ' + rate['s128']:>19}"
            f"{_fmt(row.added(TTFB, 50, ttfb=True), '+.1f'):>7}{cpu:>11}{rss:>19}"
            f"{_fmt(per.get('pg_sessions'), '.2f'):>12}{_fmt(per.get('pg_transactions'), '.2f'):>12}"
            f"{_fmt(per.get('redis_round_trips'), '.2f'):>13}{_fmt(per.get('redis_commands_sent'), '.1f'):>9}"
            f"{sum(row.warnings.values()):>6}")
    out("(per-request columns are of the c=32 plain phase; CPU ms/req = the gateway processes' utime+stime from /proc "
        "over that phase; Redis RT = writes by the gateways' redis-py clients, a pipeline counting once; warn = "
        "WARNING/ERROR log lines during the row: figures of a row with warnings may be of a degraded mode)")
    gateway_rows = [r for r in rows if not r.floor]
    one = next((r for r in gateway_rows if r.processes == 1 and r.server == args.server and "c128" in r.phases), None)
    two = next((r for r in gateway_rows if r.processes == 2 and r.server == args.server and "c128" in r.phases), None)
    if one and two:
        out("two processes vs one (in brackets, the most this machine allows: its CPUs over the CPU time per request "
            "of every process of the one-process row): " + ", ".join(
            f"{part} x{two.phases[part].rate / one.phases[part].rate:.2f} (x{_scale_ceiling(one.phases[part]):.2f})"
            for part in ("c32", "c128", "s128")
            if part in one.phases and part in two.phases and one.phases[part].rate))
    ratios = {part: main.phases[part].cpu_ms("gateway") / main.phases[part].cpu_ms("emulator")
              for part in (*PLAIN, *STREAMS) if part in main.phases and main.phases[part].cpu_ms("emulator")}
    if ratios:
        out("gateway CPU over the emulator's per request, main shape (the emulator's work is the same in every run, "
            "so this follows the machine's speed less than CPU ms do; compare it between runs): "
            + ", ".join(f"{part} {ratio:.2f}" for part, ratio in ratios.items())
            + f"; mean {sum(ratios.values()) / len(ratios):.2f}")
    floor = next((r for r in rows if r.floor), None)
    if one and floor and "c32" in one.phases and "c32" in floor.phases:
        mine, least = one.phases["c32"].cpu_ms("gateway"), floor.phases["c32"].cpu_ms("gateway")
        out(f"CPU per plain request at c=32, one {args.server} process: gateway {mine:.2f} ms = the stack's floor "
            f"{least:.2f} ms ({100 * least / mine:.0f}%) + freellm's own work {mine - least:.2f} ms")
    for row in rows:
        if row.warnings:
            out(f"  log warnings in '{row.label}': " + ", ".join(f"{k} x{v}" for k, v in row.warnings.most_common(5)))

    out()
    out("CPU ms per request of each process (gateway / emulator / redis / client):")
    for row in rows:
        for phase in row.phases.values():
            out(f"  {row.label[:40]:<41}{phase.name:<28}" + " / ".join(_fmt(phase.cpu_ms(k), ".2f") for k in PROCESS_LABELS)
                + f"   p50 {pct(phase.latencies, 50):.1f} ms, p99 {pct(phase.latencies, 99):.1f} ms")
    if main.direct:
        for phase in main.direct.values():
            out(f"  {'emulator direct':<41}{phase.name:<28}" + " / ".join(_fmt(phase.cpu_ms(k), ".2f") for k in PROCESS_LABELS)
                + f"   {phase.rate:.0f} req/s, p50 {pct(phase.latencies, 50):.1f} ms")

    out()
    out("steady state per request (SQL and transactions as the gateways see them, sessions and transactions as "
        "pg_stat_database sees them (it lags: a backend reports within 10 s, so a short phase can show some of the "
        "work before it), Redis as the gateways' clients send it and server-wide commandstats):")
    for row in rows:
        for book in row.books.values():
            per = book.per_request()
            out(f"  {row.label[:40]:<41}{book.phase:<26} SQL {per['sql_statements']:.2f}, transactions "
                f"{per['db_transactions_gateway_view']:.2f} (PG {_fmt(per['pg_transactions'], '.2f')}), connects "
                f"{per['db_connects_gateway_view']:.2f} (PG sessions {_fmt(per['pg_sessions'], '.2f')}), log rows "
                f"{per['log_rows']:.2f}; Redis round trips {per['redis_round_trips']:.2f}, commands "
                f"{per['redis_commands_sent']:.2f} (server-wide {per['redis_commands_server_wide']:.1f}); GC "
                f"{per['gc_ms']:.2f} ms ({per['gc_full_collections']} full collections in the phase)")
    for book in main.books.values():
        if book.sql:
            out(f"  SQL in '{book.phase}': " + ", ".join(f"{k} x{v}" for k, v in book.sql.most_common(8)))
        if book.redis_commands:
            out(f"  Redis commands sent in '{book.phase}': "
                + ", ".join(f"{k} x{v}" for k, v in book.redis_commands.most_common(12)))
    if bench.monitor:
        m = bench.monitor
        n = max(1, m["requests"])
        clients, scripts = sum(m["commands_from_clients"].values()), sum(m["commands_in_scripts"].values())
        out(f"  Redis MONITOR ({n} requests, the run's db only): round trips {m['round_trips'] / n:.2f}/request; "
            f"commands from clients {clients / n:.2f}/request, inside Lua scripts {scripts / n:.2f}/request, "
            f"all {(clients + scripts) / n:.2f}/request")
        out("    from clients: " + ", ".join(f"{k} x{v}" for k, v in Counter(m["commands_from_clients"]).most_common(10)))
        if scripts:
            out("    in scripts: " + ", ".join(f"{k} x{v}" for k, v in Counter(m["commands_in_scripts"]).most_common(10)))

    errors = Counter()
    for row in rows:
        for phase in [*row.phases.values(), *row.direct.values()]:
            errors.update({f"{row.label}: {phase.name}: {k}": v for k, v in phase.errors.items()})
    out()
    out("errors: " + (", ".join(f"{k} x{v}" for k, v in errors.items()) if errors else "none"))
    if errors:
        for text, count in bench.database.failures():
            out(f"  in the request log: {text[:300]!r} x{count}")
    out(f"gateway answers that needed a failover (X-FreeLLM-Attempts > 1): "
        f"{sum(p.failovers for row in rows for p in row.phases.values())}")
    levels: Counter[str] = Counter()
    samples: list[str] = []
    for log in bench.logs:
        for line in log.read_text(errors="replace").splitlines():
            match = re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", line)
            if match:
                levels[match.group(1)] += 1
                if match.group(1) in ("WARNING", "ERROR", "CRITICAL") and len(samples) < 5:
                    samples.append(line[:200])
    out("process logs (gateways + emulator): " + (", ".join(f"{k} x{v}" for k, v in levels.items()) or "empty"))
    for line in samples:
        out(f"    {line}")
    for name, paths in bench.profiles.items():
        out()
        out(f"py-spy --gil, {name} (raw stacks: {', '.join(str(p) for p in paths)}):")
        for line in summarize_profile(paths):
            out(line)


PRESETS = {
    # ~1-2 minutes on 2 shared cores.
    "quick": {"requests": 300, "serial": 80, "warmup": 50, "rounds": 4, "monitor": 25},
    "full": {"requests": 2000, "serial": 400, "warmup": 200, "rounds": 8, "monitor": 100},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick preset (about 1-2 minutes)")
    parser.add_argument("--requests", type=int, help="requests per throughput phase (quick 300, full 2000)")
    parser.add_argument("--serial", type=int, help="sequential requests each way (quick 80, full 400)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the sequential phases (quick 4, full 8)")
    parser.add_argument("--warmup", type=int, help="unmeasured requests each kind before each row (quick 50, full 200)")
    parser.add_argument("--monitor", type=int,
                        help="requests of each kind in the Redis MONITOR phase (quick 25, full 100; 0 skips it)")
    parser.add_argument("--processes", type=int, default=1,
                        help="gateway processes of the main shape (default 1); the client spreads requests over them")
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne",
                        help="ASGI server of the main shape (default daphne; a row measures the other one)")
    parser.add_argument("--redis", metavar="URL", default="", help="gateways share this Redis (quota, sessions)")
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="a PostgreSQL server URL whose user may CREATE DATABASE: the run uses a temporary "
                             "database there instead of SQLite")
    parser.add_argument("--keys", type=int, default=1000, help="upstream keys of the large-config row (default 1000; "
                        f"{len(KEYS)} or less skips it)")
    parser.add_argument("--prompt-kb", type=int, default=100,
                        help="prompt size of the large-prompt row, in KB (default 100; 0 skips it)")
    parser.add_argument("--log-rows", type=int, default=10**6,
                        help="old RequestLog rows of the large-table row (default 1,000,000; 0 skips it)")
    parser.add_argument("--no-variants", action="store_true",
                        help="skip the scale-out, other-server and HTTP-transport rows")
    parser.add_argument("--json", metavar="PATH", help="where the JSON goes (default var/bench/<UTC time>.json)")
    parser.add_argument("--profile", metavar="DIR", help="sample the gateways with py-spy during concurrent phases")
    parser.add_argument("--bare-v1", action="store_true",
                        help="what-if: serve /v1 through a Django handler without MIDDLEWARE (not how freellm runs)")
    parser.add_argument("--without", metavar="PARTS", default="",
                        help=f"what-if: leave these out of the gateways, comma-separated: {', '.join(WITHOUT_PARTS)}")
    parser.add_argument("--pin", action="store_true",
                        help="the gateways on the last CPU, this script and the emulator on the others (for a "
                             "before/after; one gateway process)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite) for a look")
    args = parser.parse_args(argv)
    for name, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = set(filter(None, args.without.split(","))) - set(WITHOUT_PARTS)
    if unknown:
        parser.error(f"--without: unknown {', '.join(sorted(unknown))} (known: {', '.join(WITHOUT_PARTS)})")
    if args.pin and (args.processes > 1 or len(os.sched_getaffinity(0)) < 2):
        parser.error("--pin needs one gateway process and at least two CPUs")
    if min(args.requests, args.processes, args.rounds) < 1 or min(args.serial, args.warmup, args.monitor) < 0:
        parser.error("--requests, --processes and --rounds must be at least 1, --serial, --warmup and --monitor "
                     "not negative")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_setup"]:
        _setup_database(argv[1], argv[2])
        return
    if argv[:1] == ["_keys"]:
        _add_keys(argv[1], int(argv[2]))
        return
    if argv[:1] == ["_rows"]:
        _add_log_rows(int(argv[1]))
        return
    args = parse_args(argv)

    if args.pin:
        # This script (the load) and what it starts next (the emulator) keep to the other CPUs.
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {GATEWAY_CPU})
    # SIGTERM takes the same way out as Ctrl-C, so the finally below always cleans up.
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="freellm-bench-"))
    procs = Processes()
    redis: RedisKeys | None = None
    database = Database(tmp, args.postgres)
    interrupted = False
    try:
        load_before = os.getloadavg()
        database.create()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "freellm.settings",
            "FREELLM_VAR_DIR": str(tmp),
            # The emulator listens on loopback, which the SSRF guard refuses unless allowed.
            "FREELLM_UPSTREAM_ALLOW": "127.0.0.1/32,::1/128,localhost",
            "DATABASE_URL": database.url,
            "REDIS_URL": args.redis,
            "FREELLM_ENV": "development",
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            BARE_V1_ENV: "1" if args.bare_v1 else "",
            WITHOUT_ENV: args.without,
        }
        if args.redis:
            redis = RedisKeys(args.redis)
        bench = Bench(args, tmp, procs, env, database, redis)
        say(f"temp environment in {tmp}")
        bench.emulator, bench.emulator_url = start_emulator(procs, env, tmp / "emulator.log")
        bench.logs.append(tmp / "emulator.log")
        say(f"emulator (pid {bench.emulator.pid}) on {bench.emulator_url}; migrating the temp database")
        run_step([sys.executable, "manage.py", "migrate", "--noinput"], env, "manage.py migrate")
        setup = run_step([sys.executable, "-m", "tests.bench_gateway", "_setup", bench.slug, bench.emulator_url], env,
                         "setup")
        bench.api_key = json.loads(setup.strip().splitlines()[-1])["api_key"]
        say(f"provider {bench.slug} ({len(KEYS)} keys, models {', '.join(MODELS)}), chain {CHAIN!r}, unified key")
        asyncio.run(bench.run())
        load = (load_before, os.getloadavg())
        path = Path(args.json) if args.json else ROOT / "var" / "bench" / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results(bench, load), indent=2, default=str))
        report(bench, load)
        print(f"\nJSON: {path}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("\ninterrupted; cleaning up")
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        procs.stop_all()
        database.drop()
        if redis is not None:
            say(f"deleted {redis.cleanup()} Redis keys this run created")
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        sys.exit(130)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
