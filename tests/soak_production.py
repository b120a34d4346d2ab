"""Production-shape soak: a script that runs for a few minutes and checks invariants, never a test.

    python -m tests.soak_production [--minutes M] [--rate R] [--postgres URL] [--keep]

(about four minutes with the default three of traffic; logs, the emulator's and the clients' records go to a
temp dir, kept with the database when an invariant breaks or with --keep)

It starts, on this machine only, everything production runs and stops it all at the end:

- a throwaway ``redis-server`` on a free port (no persistence; never the shared one on 6379): Celery broker,
  cache, channel layer, quota store and sticky sessions of every process;
- a PostgreSQL database ``freellm_soak`` (dropped and re-created at the start, dropped at the end unless
  --keep) on the server of --postgres;
- the upstream emulator (``python -m tests.emulator``), which enforces the keys' rpm and records every call;
- ``manage.py migrate`` and ``manage.py bootstrap`` with a YAML config (FREELLM_ENV=production);
- a Celery worker and Celery beat (django-celery-beat DatabaseScheduler) on the Redis broker;
- three daphne gateways.

Traffic is open-loop (Poisson arrivals, calm and busy phases alternating): chat completions plain and
streamed, and embeddings, from several unified keys ("clients") spread round-robin over the gateways.
Mid-run Redis is killed (SIGKILL) and brought back empty after a while (degraded mode), and one gateway
is restarted (SIGTERM, then started again on the same port).

Invariants checked at the end (the script exits 1 when one breaks):

1. no 500 reaches a client, and every error body is in OpenAI's shape;
2. no key is called above its rpm in any 60-second window, from the emulator's records, and no provider
   above its account rpm. Calls while Redis is down (and until the gateways retry it) are left out, and a
   window never spans the outage: there each process counts on its own by design
   (routing/quota/resilient.py), and the restarted Redis is empty;
3. no error (429 or otherwise) reaches a client while a healthy route of the chain had room all along the
   request (from the emulator's records: fewer calls than its rpm in the trailing window, and no failed
   call on it shortly before). Errors on routes whose recent calls the restarted Redis never saw are
   reported apart: the gateway learns that usage from rate-limit headers and keeps it for a minute;
4. every request a client got an answer to has its RequestLog row (same unified key, endpoint and status),
   and every request cut by the gateway restart has one too (cancelled);
5. the beat jobs ran: every key was probed (a real "ping" call at the emulator) or its probe skipped for
   want of quota or a cooldown (worker log), the failing keys again after the interval; no probe of a
   healthy key was refused for quota; QuotaWindow rows were rolled up, also after the outage;
6. the key that answers 401 ends INVALID in the database;
7. the admin's quota page on every gateway shows the degraded-mode banner while Redis is down, and no
   longer once it is back; admin pages and /v1/models?available=true answer meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DB_NAME = "freellm_soak"
REDIS_DB = 14
GATEWAYS = 3
CLIENTS = 6
ADMIN_PASSWORD = "soak-" + secrets.token_urlsafe(12)
WINDOW = 60.0
# The Redis store counts a charge for 60-61 s (per-second buckets); the emulator's clock is the same one.
ROOM_SLACK = 2.0
# A route with a failed call this recently may legitimately be cooling down (escalation: 30 s, then 120 s).
FAILURE_MEMORY = 160.0
PROBE_INTERVAL = 30
REDIS_RETRY = 5.0


# --- the upstreams ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPlan:
    label: str
    secret: str  # an emulator key: name;directives
    healthy: bool  # expected to answer (the room check counts it)


@dataclass(frozen=True)
class ModelPlan:
    id: str
    kind: str = "chat"
    rpm: int | None = None
    family: str = ""


@dataclass(frozen=True)
class ProviderPlan:
    name: str
    path: str  # under the emulator URL
    keys: tuple[KeyPlan, ...]
    models: tuple[ModelPlan, ...]
    adapter: str = "openai"
    account_rpm: int | None = None
    daily_reset_tz: str = "UTC"


PROVIDERS = (
    ProviderPlan(
        "groq", "groq/v1",
        (
            KeyPlan("groq-a", "ga;rpm=10", True),
            KeyPlan("groq-b", "gb;rpm=10", True),
            KeyPlan("groq-429", "g429;429=20", False),
            KeyPlan("groq-503", "g503;503", False),
            KeyPlan("groq-hang", "ghang;hang", False),
            KeyPlan("groq-401", "g401;401", False),
        ),
        (ModelPlan("llama-3.3-70b-versatile", rpm=10),),
    ),
    ProviderPlan(
        "cerebras", "cerebras/v1",
        (KeyPlan("cerebras-a", "ca;rpm=6", True), KeyPlan("cerebras-flaky", "cf;rpm=6;fail=3:502", True)),
        (ModelPlan("gpt-oss-120b", rpm=6),),
    ),
    ProviderPlan(
        "gemini", "gemini/v1beta", (KeyPlan("gemini-a", "gm;rpm=5", True),),
        (ModelPlan("gemini-2.5-flash", rpm=5),), adapter="gemini", daily_reset_tz="America/Los_Angeles",
    ),
    # Account-wide cap shared by a chat and an embedding model (the emulator does not enforce it: the
    # soak checks it from the records).
    ProviderPlan(
        "mistral", "mistral/v1", (KeyPlan("mistral-a", "ma", True),),
        (ModelPlan("mistral-small-latest"), ModelPlan("mistral-embed", "embedding", family="mistral-embed")),
        account_rpm=12,
    ),
    ProviderPlan(
        "mirror", "mirror/v1",
        (KeyPlan("mirror-502", "e502;502", False), KeyPlan("mirror-a", "ea;rpm=8", True)),
        (ModelPlan("mistral-embed", "embedding", rpm=8, family="mistral-embed"),),
    ),
    # Only for the requests in flight when a gateway is restarted (chain "slow", not in the traffic mix).
    ProviderPlan("slowpoke", "slowpoke/v1", (KeyPlan("slowpoke-a", "sp;slow=6", False),), (ModelPlan("snail"),)),
)  # fmt: skip
CHAINS = {
    "auto": ("chat", ["groq/llama-3.3-70b-versatile", "cerebras/gpt-oss-120b", "gemini/gemini-2.5-flash",
                      "mistral/mistral-small-latest"]),
    "embed": ("embedding", ["mistral/mistral-embed", "mirror/mistral-embed"]),
    "slow": ("chat", ["slowpoke/snail"]),
}  # fmt: skip
INVALID_KEY = ("groq", "groq-401")


def config_yaml(emulator_url: str) -> str:
    import yaml

    providers = []
    for p in PROVIDERS:
        item = {
            "name": p.name, "adapter": p.adapter, "base_url": f"{emulator_url}/{p.path}",
            "daily_reset_tz": p.daily_reset_tz,
            "keys": [{"label": k.label, "secret": k.secret} for k in p.keys],
            "models": [],
        }  # fmt: skip
        if p.account_rpm:
            item["account_rpm"] = p.account_rpm
        for m in p.models:
            model = {"id": m.id, "kind": m.kind, "context_window": 32768}
            if m.family:
                model["family"] = m.family
            if m.kind == "embedding":
                model["dimensions"] = 1024
            if m.rpm:
                model["limits"] = {"rpm": m.rpm}
            item["models"].append(model)
        providers.append(item)
    chains = [{"name": name, "kind": kind, "models": models} for name, (kind, models) in CHAINS.items()]
    return yaml.safe_dump({"providers": providers, "chains": chains}, sort_keys=False)


def _secret_of(provider: str, label: str) -> str:
    for p in PROVIDERS:
        for k in p.keys:
            if p.name == provider and k.label == label:
                return k.secret
    raise KeyError(label)


@dataclass(frozen=True)
class RoutePlan:
    provider: str
    model: str
    key_name: str  # the emulator key's name (what its records carry)
    label: str
    rpm: int | None
    healthy: bool
    chain: str


def chain_routes() -> dict[str, list[RoutePlan]]:
    by_name = {p.name: p for p in PROVIDERS}
    out: dict[str, list[RoutePlan]] = {}
    for chain, (_, members) in CHAINS.items():
        routes = []
        for member in members:
            slug, model_id = member.split("/", 1)
            p = by_name[slug]
            m = next(m for m in p.models if m.id == model_id)
            for k in p.keys:
                routes.append(RoutePlan(slug, model_id, k.secret.split(";")[0], k.label, m.rpm, k.healthy, chain))
        out[chain] = routes
    return out


# --- setup that runs inside Django (a subprocess on the soak's settings) ----------------------------


def _setup_in_django(clients: int) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from routing.services import api_key_create

    user = get_user_model().objects.create_user("soak", password=secrets.token_urlsafe(16))
    keys = {}
    for n in range(clients):
        record, raw = api_key_create(user=user, name=f"client-{n}")
        keys[n] = {"key": raw, "id": record.id}
    # An admin's edit of the beat schedule: roll the quota windows up every 20 s instead of every minute.
    every20, _ = IntervalSchedule.objects.get_or_create(every=20, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task="routing.tasks.quota_windows_rollup").update(interval=every20)
    print(json.dumps({"clients": keys}), flush=True)


# --- processes --------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: children get SIGTERM if the soak itself is killed hard, so nothing is left running. The signal
    # comes when the *thread* that started the child ends: mid-run restarts use the long-lived SPAWNER.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="soak-spawner")


async def in_spawner(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(SPAWNER, fn, *args)


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        log.close()
        self.started[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        proc = self.started.pop(name, None)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        # Clients of the broker and the database first; Redis (restarted mid-run, so last in the dict) last.
        for name in sorted(self.started, key=lambda n: (n == "redis", n == "emulator")):
            self.stop(name)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def wait_http(url: str, proc: subprocess.Popen, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode})")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {seconds:.0f} s")


class ThrowawayRedis:
    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/{REDIS_DB}"
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")

    def start(self) -> None:
        import redis

        self.procs.spawn("redis", [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], os.environ.copy())
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        self.procs.stop("redis", signal.SIGKILL)


class Database:
    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.url = urlunsplit(urlsplit(server_url)._replace(path=f"/{DB_NAME}"))

    def _server(self):
        import psycopg

        return psycopg.connect(self.server_url, autocommit=True, connect_timeout=5)

    def recreate(self) -> None:
        with self._server() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def drop(self) -> None:
        with self._server() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


class Gateway:
    def __init__(self, n: int, procs: Processes, env: dict[str, str]) -> None:
        self.n = n
        self.name = f"gateway-{n}"
        self.procs = procs
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.restarts = 0

    def start(self) -> None:
        proc = self.procs.spawn(self.name, [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port),
                                            "freellm.asgi:application"], self.env)
        wait_http(f"{self.url}/admin/login/", proc, self.name)

    def restart(self) -> int | None:
        code = self.procs.stop(self.name, signal.SIGTERM)
        self.restarts += 1
        self.start()
        return code


# --- traffic ----------------------------------------------------------------------------------------


@dataclass
class ClientCall:
    n: int
    client: int
    gateway: int
    kind: str  # chat | stream | embed
    start: float = 0.0  # wall clock when sent
    end: float = 0.0
    status: int | None = None  # what the client saw: HTTP status; a stream's error event counts as 502
    transport: str = ""  # the connection broke after the request was sent
    refused: int = 0  # gateways that refused the connection before one took it
    provider: str = ""
    attempts: int = 0
    trail: str = ""
    code: str = ""  # error code
    message: str = ""
    shape_ok: bool = True  # error bodies in OpenAI's shape

    @property
    def endpoint(self) -> str:
        return "embedding" if self.kind == "embed" else "chat"

    @property
    def streamed(self) -> bool:
        return self.kind in ("stream", "slowstream")


@dataclass
class Timeline:
    redis_down: float | None = None
    redis_up: float | None = None
    gateway_restart: tuple[float, float] | None = None
    admin_during: dict[int, str] = field(default_factory=dict)  # gateway → what its quota page showed
    admin_after: dict[int, str] = field(default_factory=dict)
    admin_pages_during: dict[str, int] = field(default_factory=dict)  # other admin pages → status
    notes: list[str] = field(default_factory=list)


CONVERSATIONS = 4
TOPICS = ["rate limits", "fallback chains", "sticky sessions", "embeddings", "streaming", "circuit breakers"]


def request_body(call: ClientCall, rng: random.Random) -> dict:
    if call.kind == "embed":
        return {"model": "embed", "input": [f"soak text {call.n} {t}" for t in rng.sample(TOPICS, rng.randint(1, 3))]}
    conv = rng.randrange(CONVERSATIONS)
    topic = TOPICS[(call.client + conv) % len(TOPICS)]
    messages = [{"role": "user", "content": f"client {call.client} conversation {conv}: explain {topic} briefly"}]
    for turn in range(rng.randrange(3)):
        messages += [{"role": "assistant", "content": f"Here is part {turn} about {topic}."},
                     {"role": "user", "content": f"and then what? ({call.n})"}]
    body: dict = {"model": "auto", "messages": messages}
    if call.kind == "stream":
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    return body


def _error_shape_ok(payload) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


async def send(http: httpx.AsyncClient, gateways: list[Gateway], call: ClientCall, api_key: str,
               body: dict) -> None:
    path = "/v1/embeddings" if call.kind == "embed" else "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"}
    # Like a load balancer: a gateway that refuses the connection (restarting) is skipped.
    for round_ in range(3 * len(gateways)):
        gw = gateways[(call.gateway + round_) % len(gateways)]
        call.start = time.time()
        try:
            if not call.streamed:
                response = await http.post(gw.url + path, json=body, headers=headers)
                call.status = response.status_code
                _read_headers(call, response)
                if response.status_code != 200:
                    _read_error(call, response.content)
            else:
                async with http.stream("POST", gw.url + path, json=body, headers=headers) as response:
                    _read_headers(call, response)
                    if response.status_code != 200:
                        call.status = response.status_code
                        _read_error(call, await response.aread())
                    else:
                        call.status = await _read_stream(call, response)
        except httpx.ConnectError:
            call.refused += 1
            await asyncio.sleep(0.2 if round_ >= len(gateways) - 1 else 0)
            continue
        except httpx.HTTPError as exc:
            call.transport = type(exc).__name__
            call.status = None
        call.gateway = gw.n
        call.end = time.time()
        return
    call.transport = "all gateways refused"
    call.end = time.time()


def _read_headers(call: ClientCall, response: httpx.Response) -> None:
    call.provider = response.headers.get("x-freellm-provider", "")
    call.attempts = int(response.headers.get("x-freellm-attempts", "0") or 0)
    call.trail = response.headers.get("x-freellm-trail", "")


def _read_error(call: ClientCall, content: bytes) -> None:
    try:
        payload = json.loads(content)
    except ValueError:
        call.shape_ok = False
        call.message = content[:200].decode(errors="replace")
        return
    call.shape_ok = _error_shape_ok(payload)
    if call.shape_ok:
        call.code = str(payload["error"].get("code") or "")
        call.message = str(payload["error"].get("message") or "")[:300]


async def _read_stream(call: ClientCall, response: httpx.Response) -> int | None:
    done = False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        payload = json.loads(data)
        if "error" in payload:
            call.shape_ok = _error_shape_ok(payload)
            call.code = str(payload["error"].get("code") or "")
            call.message = str(payload["error"].get("message") or "")[:300]
            return 502  # what the gateway logs for an interrupted stream
    if not done:
        call.transport = "stream ended without [DONE]"
        return None
    return 200


class Traffic:
    def __init__(self, gateways: list[Gateway], clients: dict[int, dict], rate: float, seed: int = 7) -> None:
        self.gateways = gateways
        self.clients = clients
        self.rate = rate
        self.rng = random.Random(seed)
        self.calls: list[ClientCall] = []
        self.in_flight = 0
        self.max_in_flight = 24
        self.stopping = False
        self.redis_samples: list[dict] = []

    def rate_at(self, elapsed: float) -> float:
        # 20 s calm, 20 s busy: the busy phases ask for more than the chains have, the calm ones less.
        busy = int(elapsed // 20) % 2 == 1
        return self.rate * (1.5 if busy else 0.5)

    async def run(self, seconds: float) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        timeout = httpx.Timeout(90.0, connect=3.0)
        began = time.monotonic()
        counter = itertools.count()
        tasks: set[asyncio.Task] = set()
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            while (elapsed := time.monotonic() - began) < seconds and not self.stopping:
                await asyncio.sleep(self.rng.expovariate(self.rate_at(elapsed)))
                if self.in_flight >= self.max_in_flight:
                    continue
                n = next(counter)
                client = self.rng.randrange(len(self.clients))
                kind = self.rng.choices(["chat", "stream", "embed"], weights=[45, 35, 20])[0]
                call = ClientCall(n, client, n % len(self.gateways), kind)
                body = request_body(call, self.rng)
                self.calls.append(call)
                task = asyncio.create_task(self._one(http, call, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=120)

    async def _one(self, http: httpx.AsyncClient, call: ClientCall, body: dict) -> None:
        self.in_flight += 1
        try:
            await send(http, self.gateways, call, self.clients[call.client]["key"], body)
        finally:
            self.in_flight -= 1


# --- admin checks -----------------------------------------------------------------------------------

BANNER = "Redis is unavailable since"


async def admin_quota_page(gw: Gateway) -> tuple[int, str]:
    """Log in as the admin on this gateway and read the quota windows page. (status, banner text or '')."""
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, follow_redirects=False) as web:
        login = await web.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        if token is None:
            return login.status_code, ""
        await web.post("/admin/login/", data={"username": "admin", "password": ADMIN_PASSWORD,
                                               "csrfmiddlewaretoken": token.group(1), "next": "/admin/"})
        page = await web.get("/admin/routing/quotawindow/")
        match = re.search(BANNER + r"[^<]*", page.text)
        return page.status_code, match.group(0) if match else ""


async def admin_pages(gw: Gateway) -> dict[str, int]:
    """Other admin pages that read the quota store or the request log: their status codes."""
    out = {}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as web:
        login = await web.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        await web.post("/admin/login/", data={"username": "admin", "password": ADMIN_PASSWORD,
                                               "csrfmiddlewaretoken": token.group(1) if token else ""})
        for path in ("/admin/", "/admin/analytics/requestlog/", "/admin/analytics/requestlog/dashboard/",
                     "/admin/providers/provider/", "/admin/routing/quotawindow/"):
            out[path] = (await web.get(path)).status_code
    return out


# --- checks -----------------------------------------------------------------------------------------


def max_in_window(times: list[float], window: float = WINDOW,
                  exclude: list[tuple[float, float]] = ()) -> tuple[int, float | None]:
    """Most calls in any [t, t + window). With ``exclude``: calls inside an excluded span are left out and
    a window never reaches across one, i.e. the calls before, between and after the spans are counted
    apart (a shared counter that was down, or came back empty, knew nothing of the other side)."""
    times = sorted(times)
    segments: list[list[float]] = [[]]
    for t in times:
        if any(a <= t <= b for a, b in exclude):
            continue
        if segments[-1] and any(segments[-1][-1] < a and t > b for a, b in exclude):
            segments.append([])
        segments[-1].append(t)
    best, at = 0, None
    for segment in segments:
        hi = 0
        for lo, t in enumerate(segment):
            hi = max(hi, lo)
            while hi < len(segment) and segment[hi] < t + window:
                hi += 1
            if hi - lo > best:
                best, at = hi - lo, t
    return best, at


def is_probe(call: dict) -> bool:
    return '"ping"' in json.dumps(call.get("body"))


def route_of(call: dict) -> tuple[str, str, str]:
    return call["provider"], call["model"] or "", call["key_name"] or ""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def had_room(route: RoutePlan, start: float, end: float, calls_by_route: dict, provider_calls: dict,
             account_rpm: dict[str, int]) -> bool:
    """True if the emulator's records show this healthy route with room during the whole request."""
    own = calls_by_route.get((route.provider, route.model, route.key_name), [])
    if any(start - FAILURE_MEMORY <= c["time"] <= end and (c["status"] != 200 or c["disconnected"]) for c in own):
        return False
    span = WINDOW + ROOM_SLACK

    def busiest(times: list[float]) -> int:
        # the trailing-window count at the start, at the end and at every change inside the request
        points = [start, end] + [t for t in times if start <= t <= end] + [t + span for t in times
                                                                           if start <= t + span <= end]
        return max(sum(1 for t in times if p - span < t <= p) for p in points)

    if route.rpm is not None and busiest([c["time"] for c in own]) >= route.rpm:
        return False
    cap = account_rpm.get(route.provider)
    if cap is not None and busiest([c["time"] for c in provider_calls.get(route.provider, [])]) >= cap:
        return False
    return True


def run_checks(traffic: Traffic, emulator_calls: list[dict], db: Database, clients: dict[int, dict],
               timeline: Timeline, began: float, logs_dir: Path) -> tuple[list[Check], list[str]]:
    checks: list[Check] = []
    report: list[str] = []
    calls = traffic.calls
    answered = [c for c in calls if c.status is not None]

    # -- figures
    outcomes = Counter((c.kind, c.status if c.status is not None else f"transport:{c.transport}") for c in calls)
    report.append(f"client requests: {len(calls)} ({sum(1 for c in calls if c.refused)} had a refused "
                  f"connection first), answered {len(answered)}")
    for (kind, status), n in sorted(outcomes.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        report.append(f"  {kind:6} {status}: {n}")
    codes = Counter((c.status, c.code) for c in answered if c.status != 200)
    if codes:
        report.append("  error codes: " + ", ".join(f"{s} {code or '-'}: {n}" for (s, code), n in sorted(codes.items())))
    served = Counter(c.provider for c in answered if c.status == 200)
    report.append("  served by: " + ", ".join(f"{p}: {n}" for p, n in served.most_common()))
    failovers = sum(1 for c in answered if c.status == 200 and c.attempts > 1)
    report.append(f"  answers after failover (attempts > 1): {failovers}")

    # -- 1. no 500s, OpenAI-shaped errors
    five_hundreds = [c for c in answered if c.status == 500]
    bad_shape = [c for c in answered if c.status != 200 and not c.shape_ok]
    checks.append(Check("no 500 reached a client", not five_hundreds,
                        f"{len(five_hundreds)} × 500" + (f", e.g. {five_hundreds[0].message!r}" if five_hundreds else "")))
    checks.append(Check("error bodies in OpenAI's shape", not bad_shape,
                        f"{len(bad_shape)} malformed" + (f", e.g. {bad_shape[0].message!r}" if bad_shape else "")))

    # -- 2. rpm per key and account rpm per provider, from the emulator's records
    degraded_span: list[tuple[float, float]] = []
    if timeline.redis_down is not None:
        # Gateways retry Redis every 5 s (routing/quota/resilient.py): until then they still count locally.
        up = (timeline.redis_up or time.time()) + REDIS_RETRY + 1
        degraded_span = [(timeline.redis_down, up)]
    by_route: dict[tuple, list[dict]] = defaultdict(list)
    by_provider: dict[str, list[dict]] = defaultdict(list)
    for c in emulator_calls:
        if c["path"].startswith("/_emulator"):
            continue
        by_route[route_of(c)].append(c)
        by_provider[c["provider"]].append(c)
    report.append(f"upstream calls (emulator): {sum(len(v) for v in by_route.values())}, of which health probes "
                  f"{sum(1 for c in emulator_calls if is_probe(c))}")
    rpm_problems = []
    report.append("  max calls in any 60 s window per key vs rpm: windows apart from the outage (checked) | "
                  "windows across it, its own calls left out | any window:")
    for p in PROVIDERS:
        for m in p.models:
            if m.rpm is None:
                continue
            for k in p.keys:
                name = k.secret.split(";")[0]
                times = [c["time"] for c in by_route.get((p.name, m.id, name), [])]
                strict, at = max_in_window(times, exclude=degraded_span)
                across, _ = max_in_window([t for t in times if not any(a <= t <= b for a, b in degraded_span)])
                overall, _ = max_in_window(times)
                refused = sum(1 for c in by_route.get((p.name, m.id, name), []) if c["status"] == 429)
                report.append(f"    {p.name}/{m.id}/{k.label}: {strict} | {across} | {overall} (limit {m.rpm}); "
                              f"{len(times)} calls, {refused} answered 429")
                if strict > m.rpm:
                    rpm_problems.append(f"{p.name}/{k.label}: {strict} calls in 60 s from "
                                        f"{at - began:.1f}s (limit {m.rpm})")
        if p.account_rpm:
            times = [c["time"] for c in by_provider.get(p.name, [])]
            strict, at = max_in_window(times, exclude=degraded_span)
            across, _ = max_in_window([t for t in times if not any(a <= t <= b for a, b in degraded_span)])
            overall, _ = max_in_window(times)
            report.append(f"    {p.name} (account): {strict} | {across} | {overall} (limit {p.account_rpm})")
            if strict > p.account_rpm:
                rpm_problems.append(f"{p.name} account: {strict} calls in 60 s from {at - began:.1f}s "
                                    f"(limit {p.account_rpm})")
    checks.append(Check("no key (or account) called above its rpm in any 60 s window outside the outage",
                        not rpm_problems, "; ".join(rpm_problems) or "all within limits"))

    # -- 3. no error while a healthy route of the chain had room
    routes = chain_routes()
    account_rpm = {p.name: p.account_rpm for p in PROVIDERS if p.account_rpm}
    room_problems, after_state_loss = [], []
    restored = degraded_span[0][1] if degraded_span else None

    def unseen_history(r: RoutePlan, c: ClientCall) -> bool:
        # Calls the restarted (empty) Redis never saw, still in the provider's window when the gateway
        # learned of them from its rate-limit headers: that usage is charged when learned and kept for a
        # minute (the gateway cannot know when the provider drops it), so the route may look full for up
        # to two minutes after them. By design (never above the rpm), reported apart.
        if restored is None or c.start < timeline.redis_down:
            return False
        history = by_route.get((r.provider, r.model, r.key_name), []) + (
            by_provider.get(r.provider, []) if r.provider in account_rpm else [])
        return any(h["time"] < restored and h["time"] > c.end - 2 * WINDOW - ROOM_SLACK for h in history)

    for c in answered:
        if c.status == 200 or c.kind not in ("chat", "stream", "embed"):
            continue
        chain = "embed" if c.kind == "embed" else "auto"
        roomy = [r for r in routes[chain] if r.healthy and had_room(r, c.start, c.end, by_route, by_provider,
                                                                   account_rpm)]
        if roomy and all(unseen_history(r, c) for r in roomy):
            after_state_loss.append(c)
            continue
        if roomy:
            seen = [x for x in traffic.redis_samples if x["route"] == roomy[0].label and x["t"] <= c.end]
            redis_view = (f"; Redis {seen[-1]['t'] - began:.0f}s: used {seen[-1]['used']}, {seen[-1]['h']}"
                          if seen else "")
            room_problems.append(f"#{c.n} {c.kind} {c.status} at {c.start - began:.1f}s on gateway-{c.gateway} "
                                 f"while {', '.join(r.label for r in roomy)} had room ({c.trail[:300]!r}"
                                 f"{redis_view})")
    refused_429 = sum(1 for c in answered if c.status == 429)
    report.append(f"errors while a route had room by the emulator's count, but that route's recent calls "
                  f"predate the Redis restart (learned usage kept for a minute): {len(after_state_loss)} "
                  f"{dict(Counter(c.status for c in after_state_loss))}")
    checks.append(Check("no error to a client while a healthy route had room (outside state loss)",
                        not room_problems,
                        f"{len(room_problems)} of {len(answered) - sum(1 for c in answered if c.status == 200)} "
                        f"errors ({refused_429} × 429)" + ("; " + "; ".join(room_problems[:5]) if room_problems else "")))

    # -- 4. request log completeness
    id_of_client = {n: v["id"] for n, v in clients.items()}
    rows = db.query("SELECT api_key_id, endpoint, status_code, outcome, stream FROM analytics_requestlog")
    logged = Counter((r[0], r[1], r[2]) for r in rows)
    wanted = Counter((id_of_client[c.client], c.endpoint, c.status) for c in answered)
    missing = wanted - logged
    # What is left over must be the requests cut in transit (a gateway restarted under them): one row each,
    # "cancelled" (499, or 200 for a stream already under way).
    extra = Counter((key, endpoint) for (key, endpoint, _), n in (logged - wanted).items() for _ in range(n))
    cut = [c for c in calls if c.status is None and c.transport != "all gateways refused"]
    cut_wanted = Counter((id_of_client[c.client], c.endpoint) for c in cut)
    report.append(f"request log: {len(rows)} rows for {len(answered)} answered requests "
                  f"+ {len(cut)} cut in transit {dict(Counter(c.transport for c in cut))}; outcomes "
                  f"{dict(Counter(r[3] for r in rows))}")
    checks.append(Check("every answered request has its RequestLog row", not missing,
                        f"{sum(missing.values())} missing: {dict(missing)}" if missing else
                        f"{len(answered)} of {len(answered)} found"))
    checks.append(Check("every request cut by the gateway restart has its row too (and nothing else is extra)",
                        extra == cut_wanted, f"{sum(extra.values())} extra rows for {len(cut)} cut requests"
                        + ("" if extra == cut_wanted else f": rows {dict(extra)} vs cut {dict(cut_wanted)}")))

    # -- 5. beat jobs
    worker_log = (logs_dir / "worker.log").read_text(errors="replace")
    probes = Counter((c["provider"], c["key_name"]) for c in emulator_calls if is_probe(c))
    probe_times = [c["time"] for c in emulator_calls if is_probe(c)]
    report.append("health probes per key: " + ", ".join(f"{p}/{k}: {n}" for (p, k), n in sorted(probes.items())))
    # A probe reserves its call like any other: a key cooling down (or out of quota) is skipped, and says so.
    skipped = Counter(re.findall(r"health probe of (\S+) skipped: (\w+)", worker_log))
    report.append("  probes skipped (no quota / cooling down): "
                  + (", ".join(f"{k} {why}: {n}" for (k, why), n in sorted(skipped.items())) or "none"))
    attempts = {f"{p.name}/{k.label}": probes.get((p.name, k.secret.split(";")[0]), 0)
                + sum(n for (label, _), n in skipped.items() if label == f"{p.name}/{k.label}")
                for p in PROVIDERS for k in p.keys}
    unprobed = [k for k, n in attempts.items() if n == 0]
    checks.append(Check("every key (all unknown at the start) was probed, or skipped by its quota/cooldown",
                        not unprobed, f"never attempted: {unprobed}" if unprobed else
                        f"{sum(probes.values())} probe calls, {sum(skipped.values())} skips"))
    # Failing keys stay unknown / half-open: the sweep comes back to them after the interval.
    failing = {k: n for k, n in attempts.items() if k in ("groq/groq-503", "groq/groq-hang", "mirror/mirror-502")}
    long_enough = time.time() - began > 2.5 * PROBE_INTERVAL
    checks.append(Check("failing keys were attempted again after an interval",
                        not long_enough or all(n >= 2 for n in failing.values()),
                        f"{failing}" + ("" if long_enough else " (run too short to require it)")))
    cooling_calls = [c for c in emulator_calls if is_probe(c) and c["status"] != 200 and c["key_name"] in
                     {"ga", "gb", "ca", "gm", "ea", "ma"} and not (restored and timeline.redis_down <= c["time"]
                                                                  <= restored + WINDOW)]
    checks.append(Check("no probe was refused by the upstream for quota on a healthy key (outside state loss)",
                        not cooling_calls, f"{len(cooling_calls)}: "
                        + ", ".join(f"{c['provider']}/{c['key_name']} {c['status']} at {c['time'] - began:.0f}s"
                                    for c in cooling_calls[:5])))
    rpm_of = {(p.name, m.id, k.secret.split(";")[0]): m.rpm for p in PROVIDERS for m in p.models for k in p.keys}
    at_limit = []
    for c in emulator_calls:
        limit = rpm_of.get(route_of(c))
        if is_probe(c) and limit:
            before = sum(1 for o in by_route[route_of(c)] if c["time"] - WINDOW < o["time"] < c["time"])
            if before >= limit:
                at_limit.append(f"{c['provider']}/{c['key_name']} at {c['time'] - began:.0f}s ({before} calls before it)")
    report.append(f"  probes sent to a key already at its rpm: {len(at_limit)} {at_limit[:5]}")
    after_outage = [t for t in probe_times if timeline.redis_up and t > timeline.redis_up]
    report.append(f"  probes after Redis came back: {len(after_outage)}")
    windows = db.query("SELECT COUNT(*), MIN(updated_at), MAX(updated_at) FROM routing_quotawindow")[0]
    ran = Counter(re.findall(r"Task routing\.tasks\.(\w+)\[[^\]]+\] succeeded", worker_log))
    failed_tasks = Counter(re.findall(r"Task routing\.tasks\.(\w+)\[[^\]]+\] raised", worker_log))
    report.append("worker: " + ", ".join(f"{name} ok {n}×" for name, n in sorted(ran.items()))
                  + (f"; raised: {dict(failed_tasks)}" if failed_tasks else ""))
    last_rollup = windows[2].timestamp() if windows[2] else 0
    checks.append(Check("QuotaWindow rows rolled up (also after the outage)",
                        windows[0] > 0 and (timeline.redis_up is None or last_rollup > timeline.redis_up),
                        f"{windows[0]} rows, last updated {last_rollup - began:.0f}s into the run"))
    states = db.query("SELECT p.slug, k.label, k.status FROM providers_providerkey k JOIN providers_provider p "
                      "ON p.id = k.provider_id ORDER BY p.slug, k.label")
    report.append("key status: " + ", ".join(f"{s}/{label}={st}" for s, label, st in states))

    # -- 6. the 401 key
    status = {(s, label): st for s, label, st in states}.get(INVALID_KEY)
    checks.append(Check("the 401 key ends INVALID in the database", status == "invalid", f"status {status!r}"))

    # -- 7. admin banner
    if timeline.redis_down is not None:
        during = timeline.admin_during
        after = timeline.admin_after
        checks.append(Check("admin quota page shows degraded mode on every gateway while Redis is down",
                            len(during) == GATEWAYS and all(v.startswith(BANNER) for v in during.values()),
                            "; ".join(f"gateway-{n}: {v[:90] or 'no banner'}" for n, v in sorted(during.items()))))
        checks.append(Check("admin quota page drops the banner once Redis is back",
                            len(after) == GATEWAYS and not any(v.startswith(BANNER) for v in after.values()),
                            "; ".join(f"gateway-{n}: {v[:60] or 'no banner'}" for n, v in sorted(after.items()))))
        bad_pages = {p: s for p, s in timeline.admin_pages_during.items() if s >= 500}
        checks.append(Check("admin pages and /v1/models answer while Redis is down", not bad_pages,
                            f"{timeline.admin_pages_during}"))
        down, up = timeline.redis_down, timeline.redis_up or time.time()
        during_outage = [c for c in calls if down <= c.start <= up]
        report.append(f"degraded mode ({up - down:.0f} s without Redis): {len(during_outage)} requests, "
                      f"{dict(Counter(c.status if c.status is not None else c.transport for c in during_outage))}")
    for note in timeline.notes:
        report.append(note)
    return checks, report


# --- the run ----------------------------------------------------------------------------------------


def manage(args: list[str], env: dict[str, str], log: Path) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    log.open("a").write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


async def timeline_events(minutes: float, began: float, redis: ThrowawayRedis, gateways: list[Gateway],
                          timeline: Timeline, traffic: Traffic) -> None:
    total = minutes * 60

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, began + fraction * total - time.time()))

    def say(text: str) -> None:
        print(f"[{time.time() - began:6.1f}s] {text}", flush=True)

    await at(0.30)
    await in_spawner(redis.kill)
    timeline.redis_down = time.time()
    say("Redis killed (SIGKILL): degraded mode")
    await asyncio.sleep(max(8.0, 0.05 * total))
    for gw in gateways:
        status, banner = await admin_quota_page(gw)
        timeline.admin_during[gw.n] = banner or f"HTTP {status}"
    timeline.admin_pages_during = await admin_pages(gateways[0])
    async with httpx.AsyncClient(timeout=30) as http:
        for gw in gateways:
            models = await http.get(f"{gw.url}/v1/models", params={"available": "true"},
                                    headers={"Authorization": f"Bearer {traffic.clients[0]['key']}"})
            timeline.admin_pages_during[f"gateway-{gw.n} /v1/models?available=true"] = models.status_code
    say(f"admin during the outage: {timeline.admin_during}")
    await at(0.45)
    await in_spawner(redis.start)
    timeline.redis_up = time.time()
    say("Redis back (empty)")
    await asyncio.sleep(max(10.0, 0.05 * total))
    for gw in gateways:
        status, banner = await admin_quota_page(gw)
        timeline.admin_after[gw.n] = banner or ("" if status == 200 else f"HTTP {status}")
    say(f"admin after the outage: { {n: v or 'no banner' for n, v in timeline.admin_after.items()} }")
    await at(0.70)
    victim = gateways[1]
    # A restart that cuts requests in flight, as a deploy does (daphne cancels them on SIGTERM): two slow
    # ones (plain and streamed) are sure to be, besides whatever traffic is there.
    async with httpx.AsyncClient(timeout=httpx.Timeout(90.0, connect=3.0)) as http:
        slow = []
        for kind in ("slow", "slowstream"):
            call = ClientCall(-len(traffic.calls), 0, victim.n, kind)
            traffic.calls.append(call)
            body = {"model": "slow", "stream": kind == "slowstream",
                    "messages": [{"role": "user", "content": "take your time"}]}
            slow.append(asyncio.create_task(send(http, [victim], call, traffic.clients[0]["key"], body)))
        await asyncio.sleep(1.5)
        in_flight = sum(1 for c in traffic.calls if c.gateway == victim.n and not c.end and c.start)
        stopped = time.time()
        code = await in_spawner(victim.restart)
        await asyncio.gather(*slow)
    timeline.gateway_restart = (stopped, time.time())
    say(f"{victim.name} restarted with {in_flight} request(s) in flight (exit code {code}, down "
        f"{time.time() - stopped:.1f}s)")


async def sample_redis(redis_url: str, samples: list[dict], stop: asyncio.Event) -> None:
    """Every 2 s, what the shared quota store holds for each healthy route (for explaining a failed check):
    requests in the minute window, breaker/exhaustion hash, learned limits."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5,
                                     decode_responses=True)
    routes = {r for rs in chain_routes().values() for r in rs if r.healthy}
    while not stop.is_set():
        now = time.time()
        for r in routes:
            base = f"freellm:q:r:{r.provider}|{r.model}|{r.label}"
            try:
                minute = await client.hgetall(f"{base}:mr")
                health = await client.hgetall(f"{base}:h")
                learned = await client.hgetall(f"{base}:l")
            except Exception:  # Redis down: nothing to sample
                break
            used = sum(int(v) for k, v in minute.items() if int(k) >= int(now) - 60)
            samples.append({"t": now, "route": r.label, "used": used, "buckets": minute, "h": health,
                            "l": learned})
        try:
            await asyncio.wait_for(stop.wait(), 2)
        except TimeoutError:
            pass
    await client.aclose()


async def progress(traffic: Traffic, began: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 10)
        except TimeoutError:
            pass
        done = [c for c in traffic.calls if c.end]
        statuses = Counter(c.status if c.status is not None else "cut" for c in done)
        print(f"[{time.time() - began:6.1f}s] sent {len(traffic.calls)}, done {len(done)}, in flight "
              f"{traffic.in_flight}: {dict(sorted(statuses.items(), key=str))}", flush=True)


async def drive(minutes: float, rate: float, redis: ThrowawayRedis, gateways: list[Gateway],
                clients: dict[int, dict]) -> tuple[Traffic, Timeline, float]:
    traffic = Traffic(gateways, clients, rate)
    timeline = Timeline()
    began = time.time()
    stop = asyncio.Event()
    reporter = asyncio.create_task(progress(traffic, began, stop))
    sampler = asyncio.create_task(sample_redis(redis.url, traffic.redis_samples, stop))
    events = asyncio.create_task(timeline_events(minutes, began, redis, gateways, timeline, traffic))
    await traffic.run(minutes * 60)
    if not events.done():
        events.cancel()
        timeline.notes.append("note: the run ended before every mid-run event happened")
    try:
        await events
    except asyncio.CancelledError:
        pass
    stop.set()
    await reporter
    await sampler
    return traffic, timeline, began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=1.5,
                        help="mean requests per second (calm phases ask for half of it, busy ones for 1.5 times it)")
    database_url = os.environ.get("DATABASE_URL", "")
    parser.add_argument("--postgres", help="a PostgreSQL server whose user may create databases",
                        default=database_url if database_url.startswith("postgres") else
                        "postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--setup", type=int, help=argparse.SUPPRESS)  # internal: runs inside Django
    args = parser.parse_args(argv)
    if args.setup is not None:
        _setup_in_django(args.setup)
        return 0

    run_dir = Path(tempfile.mkdtemp(prefix="freellm-soak-"))
    logs = run_dir / "logs"
    logs.mkdir()
    procs = Processes(logs)
    db = Database(args.postgres)
    failed = True

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        print(f"soak: {args.minutes:g} min, ~{args.rate:g} req/s; logs in {logs}", flush=True)
        redis = ThrowawayRedis(procs)
        redis.start()
        db.recreate()
        emulator_port = free_port()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        emulator = procs.spawn("emulator", [sys.executable, "-m", "tests.emulator", "--port", str(emulator_port)],
                               os.environ.copy())
        wait_http(f"{emulator_url}/_emulator/calls", emulator, "emulator")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FREELLM_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "freellm.settings",
            "PYTHONPATH": str(ROOT),
            "FREELLM_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FREELLM_ENCRYPTION_KEYS": "k1:" + b64encode(secrets.token_bytes(32)).decode(),
            "FREELLM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "DATABASE_URL": db.url,
            "REDIS_URL": redis.url,
            "FREELLM_VAR_DIR": str(run_dir / "var"),
            # The emulator listens on loopback, which the SSRF guard refuses unless allowed.
            "FREELLM_UPSTREAM_ALLOW": "127.0.0.1/32,::1/128,localhost",
            "FREELLM_PROBE_INTERVAL": str(PROBE_INTERVAL),
            # The hang key costs this much per try until its circuit opens (the default is 30 s).
            "FREELLM_FIRST_TOKEN_TIMEOUT": "5",
            "LOG_LEVEL": "INFO",
        }
        config = run_dir / "freellm.yaml"
        config.write_text(config_yaml(emulator_url))
        manage(["migrate", "--noinput"], env, logs / "manage.log")
        manage(["bootstrap", "--config", str(config)], env, logs / "manage.log")
        setup = subprocess.run([sys.executable, "-m", "tests.soak_production", "--setup", str(CLIENTS)], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=120)
        if setup.returncode != 0:
            raise RuntimeError(f"setup failed:\n{setup.stderr[-3000:]}")
        clients = {int(n): v for n, v in json.loads(setup.stdout.strip().splitlines()[-1])["clients"].items()}

        celery = str(BIN / "celery")
        procs.spawn("worker", [celery, "-A", "freellm", "worker", "--loglevel=INFO", "--concurrency=2",
                               "-n", "soak@%h"], env, cwd=run_dir)
        procs.spawn("beat", [celery, "-A", "freellm", "beat", "--loglevel=INFO",
                             "--schedule", str(run_dir / "celerybeat-schedule")], env, cwd=run_dir)
        gateways = [Gateway(n, procs, env) for n in range(GATEWAYS)]
        for gw in gateways:
            gw.start()
        print(f"started: redis :{redis.port}, postgres {DB_NAME}, emulator :{emulator_port}, worker, beat, "
              f"gateways {[gw.port for gw in gateways]}", flush=True)

        traffic, timeline, began = asyncio.run(drive(args.minutes, args.rate, redis, gateways, clients))
        # Let the last request logs reach the database, then read everything.
        time.sleep(3)
        emulator_calls = httpx.get(f"{emulator_url}/_emulator/calls", timeout=30).json()
        (logs / "emulator_calls.json").write_text(json.dumps(emulator_calls))
        (logs / "client_calls.json").write_text(json.dumps([vars(c) for c in traffic.calls]))
        (logs / "redis_samples.json").write_text(json.dumps(traffic.redis_samples))
        (logs / "timeline.json").write_text(json.dumps({**vars(timeline), "began": began}, default=str))
        checks, report = run_checks(traffic, emulator_calls, db, clients, timeline, began, logs)
        for name in [n for n in procs.started if n.startswith("gateway")] + ["worker", "beat"]:
            text = (logs / f"{name}.log").read_text(errors="replace")
            tracebacks = text.count("Traceback (most recent call last)")
            if tracebacks:
                report.append(f"{name}.log: {tracebacks} traceback(s) (see {logs / (name + '.log')})")
        print("\n== soak summary ==")
        for line in report:
            print(line)
        print()
        for check in checks:
            print(f"[{'PASS' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        failed = not all(c.ok for c in checks)
        print(f"\nsoak {'FAILED' if failed else 'passed'}: {sum(c.ok for c in checks)}/{len(checks)} invariants hold")
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("soak interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        SPAWNER.shutdown()
        if args.keep or failed:
            print(f"kept: database {DB_NAME}, logs {logs}")
        else:
            db.drop()
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
