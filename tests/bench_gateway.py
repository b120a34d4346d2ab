"""Gateway benchmark: a script that prints numbers, never a test.

    python -m tests.bench_gateway [--requests N] [--concurrency C] [--stream] [--processes P] [--redis URL]
                                  [--postgres URL] [--serial N] [--warmup N] [--profile DIR] [--bare-v1] [--keep]

It builds a throwaway environment (temp FREELLM_VAR_DIR with its own SQLite, ``manage.py migrate``, one
provider served by the upstream emulator with three keys, a two-model chain ``auto``, a unified key), starts
the emulator and P daphne gateways as separate processes, warms up, then drives chat completions with
httpx.AsyncClient against the emulator directly (the baseline) and through the gateway(s):

- serial (concurrency 1): the gateway's added latency per request without queueing;
- concurrent (N requests, C in flight): throughput and latency under load (and the same for streams with
  --stream, plus time to first byte: the first body byte, which the gateway sends once the upstream's
  first content chunk is in).

With P > 1 the client spreads requests round-robin over the gateways (no load balancer in between).

Besides latency it reports CPU milliseconds per request of each process (read from /proc), which on a
small shared machine says more than latency does, and for each gateway phase the SQL statements the
gateways ran (counted by an execute wrapper in the gateway processes), the RequestLog rows written, and
whether the routing config was reloaded. The gateways run ``tests.bench_gateway:application``: freellm's
own ASGI application plus that counter and a ``/__bench__/stats`` path; nothing else is changed.

With --redis URL every gateway uses that Redis (quota store, sticky sessions, config version, channel
layer). Keys the run creates there are deleted at the end; keys that were there before are left alone.
With --postgres URL (a server whose user may CREATE DATABASE) the run uses a temporary database there
instead of SQLite, dropped at the end, and reports how many connections the gateways hold open.
With --profile DIR, py-spy (not a project dependency: ``pip install py-spy`` somewhere on PATH) samples the
gateways (``--gil``: the thread running Python) during the concurrent phases; raw stacks go to DIR and a
summary is printed. --bare-v1 is a what-if, not how freellm runs: /v1 is served by a Django handler
without MIDDLEWARE, to measure what the middleware stack costs the API.

Everything it started is stopped, and the temp dir removed, on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
STATS_PATH = "/__bench__/stats"
KEYS = ["bench-a", "bench-b", "bench-c"]
MODELS = ["echo-small", "echo-large"]
CHAIN = "auto"
# Distinct conversation openings: requests reuse them round-robin, so sticky sessions are both created
# and reused, as with real clients.
CONVERSATIONS = 100
USER_TEXT = "conversation {k}: please answer with a short friendly sentence about routing requests across providers"


# --- the gateway side: freellm's ASGI app plus a SQL counter (runs inside each daphne process) --------


BARE_V1_ENV = "FREELLM_BENCH_BARE_V1"


def _instrumented_application():
    """freellm.asgi.application, with every SQL statement and new DB connection counted, and the counts
    served at STATS_PATH. With FREELLM_BENCH_BARE_V1 set (--bare-v1), /v1 goes to a Django ASGIHandler
    built without MIDDLEWARE: a what-if that measures what the middleware stack costs the API."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")
    from django.db.backends.signals import connection_created

    from freellm.asgi import application as freellm_app

    sql: Counter[str] = Counter()
    connections = 0
    lock = threading.Lock()
    table = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)

    def count(execute, statement, params, many, context):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        match = table.search(statement)
        with lock:
            sql[f"{verb} {match.group(1)}" if match else verb] += 1
        return execute(statement, params, many, context)

    def instrument(sender, connection, **kwargs):
        nonlocal connections
        with lock:
            connections += 1
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

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

    async def application(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            from routing.config import _state

            with lock:
                payload = {
                    "sql": dict(sql),
                    "connections": connections,
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
        await freellm_app(scope, receive, send)

    return application


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
    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(16))
    _, raw = api_key_create(user=user, name="bench")
    print(json.dumps({"api_key": raw}), flush=True)


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


def start_gateway(procs: Processes, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    daphne = Path(sys.executable).parent / "daphne"
    proc = procs.spawn("gateway", [str(daphne), "-b", "127.0.0.1", "-p", str(port), "tests.bench_gateway:application"],
                       env=env, log=log, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_until_up(proc, url + STATS_PATH, log, "gateway")
    return proc, url


# --- load ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    label: str  # "emulator" | "gateway"
    urls: list[str]  # chat completions URLs; request i goes to urls[i % len(urls)]
    model: str
    keys: list[str]  # bearer tokens, rotated like the gateway rotates upstream keys

    def request(self, i: int, stream: bool) -> tuple[str, dict, dict]:
        k = i % CONVERSATIONS
        body = {"model": self.model, "stream": stream, "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": USER_TEXT.format(k=k)},
        ]}
        headers = {"Authorization": f"Bearer {self.keys[i % len(self.keys)]}"}
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


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000


async def one_request(client: httpx.AsyncClient, target: Target, i: int, phase: Phase) -> None:
    url, body, headers = target.request(i, phase.stream)
    began = time.perf_counter()
    try:
        if not phase.stream:
            response = await client.post(url, json=body, headers=headers)
            if response.status_code != 200:
                phase.errors[f"HTTP {response.status_code}"] += 1
                return
            content = response.json()["choices"][0]["message"]["content"] or ""
            if not content.startswith("Echo:"):
                phase.errors["unexpected answer"] += 1
                return
            phase.latencies.append(time.perf_counter() - began)
        else:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    phase.errors[f"HTTP {response.status_code}"] += 1
                    return
                first = None
                tail = b""
                async for chunk in response.aiter_raw():
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
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        phase.errors[type(exc).__name__] += 1
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


async def drive(client: httpx.AsyncClient, target: Target, phase: Phase, cpu: CpuMeter, *,
                show_progress: bool = True) -> Phase:
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < phase.requests:
            await one_request(client, target, i, phase)

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


# --- steady-state bookkeeping ------------------------------------------------------------------------


class Database:
    """The run's own database: a SQLite file in the temp dir, or with --postgres a temporary database
    created on that server (and dropped at the end)."""

    def __init__(self, tmp: Path, postgres_url: str = "") -> None:
        self.sqlite_path = tmp / "bench.sqlite3"
        self.server_url = postgres_url
        self.name = f"freellm_bench_{os.getpid()}"
        self.created = False
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

            with psycopg.connect(self.url, connect_timeout=5) as conn:
                return conn.execute(query).fetchone()[0]
        with sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=20) as db:
            return db.execute(query).fetchone()[0]

    def open_connections(self) -> int | None:
        """Server-side connections to this database (PostgreSQL only), not counting the one asking."""
        if not self.server_url:
            return None
        with self._server() as conn:
            return conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                "pg_backend_pid()", (self.name,)).fetchone()[0]


@dataclass
class Snapshot:
    log_rows: int
    sql: Counter[str]
    connections: int  # DB connections opened since the gateway started
    threads: int
    config_versions: list[str | None]
    redis_calls: Counter[str]  # server-wide INFO commandstats
    open_connections: int | None = None  # PostgreSQL: connections to the run's database


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
    def redis_calls(self) -> Counter[str]:
        return self.after.redis_calls - self.before.redis_calls


class Ledger:
    """Reads the gateways' counters, the RequestLog table and Redis' command counters."""

    def __init__(self, gateway_urls: list[str], database: Database, redis_client=None) -> None:
        self.gateway_urls = gateway_urls
        self.database = database
        self.log_rows = database.log_rows
        self.redis = redis_client

    def _redis_calls(self) -> Counter[str]:
        if self.redis is None:
            return Counter()
        stats = self.redis.info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                        if name != "cmdstat_info"})

    async def snapshot(self, client: httpx.AsyncClient) -> Snapshot:
        snap = Snapshot(await asyncio.to_thread(self.log_rows), Counter(), 0, 0, [],
                        await asyncio.to_thread(self._redis_calls),
                        await asyncio.to_thread(self.database.open_connections))
        for url in self.gateway_urls:
            data = (await client.get(url + STATS_PATH)).json()
            snap.sql.update(data["sql"])
            snap.connections += data["connections"]
            snap.threads += data["threads"]
            snap.config_versions.append(data["config_version"])
        return snap

    async def settle(self, expected_rows: int, timeout: float = 15.0) -> None:
        """Wait for the gateways' background log writes: until the expected rows are there, or the count
        stops moving for a second."""
        deadline = time.monotonic() + timeout
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            rows = await asyncio.to_thread(self.log_rows)
            if rows >= expected_rows:
                await asyncio.sleep(0.3)  # the sticky-session mirror writes on its own short delay
                return
            if rows != last:
                last, still_since = rows, time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                return
            await asyncio.sleep(0.1)


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


async def benchmark(args, database: Database, emulator: tuple[subprocess.Popen, str], slug: str, api_key: str,
                    gateways: list[tuple[subprocess.Popen, str]], redis: RedisKeys | None) -> dict:
    # Inside the loop SIGTERM cancels the run like Ctrl-C does (asyncio.run's own SIGINT handling), rather
    # than raising in whichever task happens to be running.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    emulator_proc, emulator_url = emulator
    pids = {"gateway": [p.pid for p, _ in gateways], "emulator": [emulator_proc.pid]}
    if redis is not None and (redis_pid := redis.server_pid()):
        pids["redis"] = [redis_pid]
    cpu = CpuMeter(pids)
    direct = Target("emulator", [f"{emulator_url}/{slug}/v1/chat/completions"], MODELS[0], KEYS)
    through = Target("gateway", [f"{url}/v1/chat/completions" for _, url in gateways], CHAIN, [api_key])
    ledger = Ledger([url for _, url in gateways], database, redis.client if redis else None)
    profiler = Profiler(Path(args.profile) if args.profile else None, pids["gateway"])
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    phases: list[Phase] = []
    books: list[Bookkeeping] = []
    profiles: dict[str, list[Path]] = {}
    kinds = (False, True) if args.stream else (False,)

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        say(f"warming up ({args.warmup} requests each way)")
        for target in (direct, through):
            for stream in kinds:
                await drive(client, target, Phase("warm-up", target.label, stream, args.warmup, args.concurrency),
                            cpu, show_progress=False)
        await ledger.settle(args.warmup * len(kinds))

        plan: list[tuple[str, Target, bool, int, int]] = []
        for stream in kinds:
            kind = "stream" if stream else "chat"
            if args.serial:
                plan += [(f"emulator {kind} serial", direct, stream, args.serial, 1),
                         (f"gateway {kind} serial", through, stream, args.serial, 1)]
            plan += [(f"emulator {kind} c={args.concurrency}", direct, stream, args.requests, args.concurrency),
                     (f"gateway {kind} c={args.concurrency}", through, stream, args.requests, args.concurrency)]

        for name, target, stream, n, c in plan:
            say(f"{name}: {n} requests")
            if target is direct:
                phases.append(await drive(client, target, Phase(name, target.label, stream, n, c), cpu))
                continue
            before = await ledger.snapshot(client)
            if c > 1:
                profiler.start("stream" if stream else "chat")
            phases.append(await drive(client, target, Phase(name, target.label, stream, n, c), cpu))
            if c > 1 and profiler.out_dir:
                profiles[name] = profiler.stop()
            await ledger.settle(before.log_rows + n)
            books.append(Bookkeeping(name, n, before, await ledger.snapshot(client)))
    return {"phases": phases, "books": books, "profiles": profiles}


def report(args, results: dict, logs: list[Path], load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    phases: list[Phase] = results["phases"]
    out = print
    store = f"Redis {args.redis}" if args.redis else "in-process (embedded mode, no Redis)"
    out()
    out(f"freellm gateway benchmark: {args.processes} daphne gateway process(es); quota/session store: {store}; "
        f"database: {'PostgreSQL (temporary database)' if args.postgres else 'SQLite (temp file)'}"
        + ("; WHAT-IF --bare-v1: /v1 served without Django MIDDLEWARE" if args.bare_v1 else ""))
    out(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; client, emulator and gateways share "
        f"them; load average before {load[0][0]:.2f}, after {load[1][0]:.2f} (1 min)")
    out("latency is measured by the client; CPU ms/request from /proc (utime+stime of each process during the "
        "phase, divided by its requests)")
    out()
    cpu_labels = [label for label in ("gateway", "emulator", "redis", "client") if any(label in p.cpu for p in phases)]
    out(f"{'phase':<28}{'ok':>6}{'err':>5}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"   CPU ms/request: {' / '.join(cpu_labels)}")
    for p in phases:
        cpu = " / ".join(f"{1000 * p.cpu.get(label, 0.0) / max(1, p.done):.2f}" for label in cpu_labels)
        out(f"{p.name:<28}{p.ok:>6}{sum(p.errors.values()):>5}{p.rate:>8.0f}{pct(p.latencies, 50):>9.1f}"
            f"{pct(p.latencies, 95):>9.1f}{pct(p.latencies, 99):>9.1f}   {cpu}")
    streams = [p for p in phases if p.stream]
    if streams:
        out()
        out(f"{'time to first byte':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
        for p in streams:
            out(f"{p.name:<28}{pct(p.ttfb, 50):>9.1f}{pct(p.ttfb, 95):>9.1f}{pct(p.ttfb, 99):>9.1f}")

    out()
    out("gateway overhead (gateway p50 minus emulator p50 at the same concurrency):")
    by_name = {p.name: p for p in phases}
    for p in phases:
        base = by_name.get(p.name.replace("gateway", "emulator", 1))
        if p.target != "gateway" or base is None:
            continue
        line = f"  {p.name:<26} {pct(p.latencies, 50) - pct(base.latencies, 50):+8.1f} ms latency"
        if p.stream:
            line += f", {pct(p.ttfb, 50) - pct(base.ttfb, 50):+.1f} ms to first byte"
        out(line + f"; gateway CPU {1000 * p.cpu.get('gateway', 0.0) / max(1, p.done):.2f} ms/request")
    errors = Counter()
    for p in phases:
        errors.update({f"{p.name}: {k}": v for k, v in p.errors.items()})
    out()
    out("errors: " + (", ".join(f"{k} x{v}" for k, v in errors.items()) if errors else "none"))
    out(f"gateway answers that needed a failover (X-FreeLLM-Attempts > 1): "
        f"{sum(p.failovers for p in phases if p.target == 'gateway')}")

    out()
    out("steady state per gateway phase (after warm-up; SQL counted by an execute wrapper inside the gateways):")
    for book in results["books"]:
        n = max(1, book.requests)
        sql = book.sql
        out(f"  {book.phase}: {book.requests} requests -> {book.log_rows} RequestLog rows; "
            f"{sum(sql.values())} SQL statements ({sum(sql.values()) / n:.2f}/request); "
            f"{book.after.connections - book.before.connections} new DB connections; "
            f"gateway threads {book.before.threads} -> {book.after.threads}"
            + (f"; PostgreSQL connections open {book.before.open_connections} -> {book.after.open_connections}"
               if book.after.open_connections is not None else ""))
        if sql:
            out("    SQL: " + ", ".join(f"{k} x{v}" for k, v in sql.most_common()))
        loads = sum(v for k, v in sql.items() if k.startswith("SELECT providers_"))
        lookups = sum(v for k, v in sql.items() if k.startswith("SELECT routing_apikey"))
        version = ("unchanged" if book.before.config_versions == book.after.config_versions
                   else f"changed {book.before.config_versions} -> {book.after.config_versions}")
        out(f"    routing config loads (SELECTs on providers_*): {loads}; unified-key lookups: {lookups}; "
            f"loaded config version {version}")
        if args.redis:
            calls = book.redis_calls
            out(f"    Redis commands (server-wide INFO commandstats; other clients of that server count too): "
                f"{sum(calls.values())} ({sum(calls.values()) / n:.2f}/request): "
                + ", ".join(f"{k} x{v}" for k, v in calls.most_common(10)))

    levels: Counter[str] = Counter()
    samples: list[str] = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", line)
            if match:
                levels[match.group(1)] += 1
                if match.group(1) in ("WARNING", "ERROR", "CRITICAL") and len(samples) < 5:
                    samples.append(line[:200])
    out()
    out("process logs (gateways + emulator): " + (", ".join(f"{k} x{v}" for k, v in levels.items()) or "empty"))
    for line in samples:
        out(f"    {line}")

    for name, paths in results["profiles"].items():
        out()
        out(f"py-spy --gil, {name} (raw stacks: {', '.join(str(p) for p in paths)}):")
        for line in summarize_profile(paths):
            out(line)


def main() -> None:
    if sys.argv[1:2] == ["_setup"]:
        _setup_database(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(prog="python -m tests.bench_gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrent phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (default 50)")
    parser.add_argument("--stream", action="store_true", help="also measure streaming chat")
    parser.add_argument("--processes", type=int, default=1,
                        help="daphne gateway processes (default 1); the client spreads requests over them")
    parser.add_argument("--redis", metavar="URL", default="", help="gateways share this Redis (quota, sessions)")
    parser.add_argument("--postgres", metavar="URL", default="",
                        help="a PostgreSQL server URL whose user may CREATE DATABASE: the run uses a temporary "
                             "database there instead of SQLite")
    parser.add_argument("--serial", type=int, default=200,
                        help="requests of the concurrency-1 phases (0 skips them; default 200)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests each way first (default 200)")
    parser.add_argument("--profile", metavar="DIR", help="sample the gateways with py-spy during concurrent phases")
    parser.add_argument("--bare-v1", action="store_true",
                        help="what-if: serve /v1 through a Django handler without MIDDLEWARE (not how freellm runs)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite) for a look")
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.processes) < 1:
        parser.error("--requests, --concurrency and --processes must be at least 1")

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
            "DATABASE_URL": database.url,
            "REDIS_URL": args.redis,
            "FREELLM_ENV": "development",
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            BARE_V1_ENV: "1" if args.bare_v1 else "",
        }
        if args.redis:
            redis = RedisKeys(args.redis)
        # Unique per run, so quota state another run left in a shared Redis never applies to this one.
        slug = f"bench{os.getpid()}"
        say(f"temp environment in {tmp}")
        emulator = start_emulator(procs, env, tmp / "emulator.log")
        say(f"emulator (pid {emulator[0].pid}) on {emulator[1]}; migrating the temp database")
        run_step([sys.executable, "manage.py", "migrate", "--noinput"], env, "manage.py migrate")
        setup = run_step([sys.executable, "-m", "tests.bench_gateway", "_setup", slug, emulator[1]], env, "setup")
        api_key = json.loads(setup.strip().splitlines()[-1])["api_key"]
        say(f"provider {slug} ({len(KEYS)} keys, models {', '.join(MODELS)}), chain {CHAIN!r}, unified key created")
        logs = [tmp / "emulator.log"]
        gateways = []
        for n in range(args.processes):
            logs.append(tmp / f"gateway{n}.log")
            gateways.append(start_gateway(procs, env, logs[-1]))
            say(f"gateway {n} (daphne pid {gateways[-1][0].pid}) on {gateways[-1][1]}")
        results = asyncio.run(benchmark(args, database, emulator, slug, api_key, gateways, redis))
        report(args, results, logs, (load_before, os.getloadavg()))
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
