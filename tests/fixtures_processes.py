"""Real gateway processes (daphne or uvicorn) against the test database, for tests of state shared across processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{s.get('USER') or 'postgres'}:{s.get('PASSWORD') or ''}@{host}:{port}/{s['NAME']}"


class GatewayProcess:
    def __init__(self, env: dict[str, str], server: str = "daphne") -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bin_dir = Path(sys.executable).parent
        if server == "uvicorn":
            # As `FREELLM_SERVER=uvicorn ./dev run` starts it.
            argv = [str(bin_dir / "uvicorn"), "freellm.asgi:application", "--host", "127.0.0.1", "--port",
                    str(self.port), "--http", "httptools", "--loop", "uvloop", "--timeout-graceful-shutdown", "10"]
        else:
            argv = [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), "freellm.asgi:application"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        def answers() -> bool:
            try:
                httpx.get(f"{self.url}/v1/models", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        up = wait_until(answers, timeout=30, interval=0.2, alive=lambda: self.proc.poll() is None)
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway process exited: {self.proc.stderr.read().decode()[-2000:]}")
        if not up:
            self.stop()
            raise RuntimeError("gateway process did not start in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def gateway_processes(transactional_db, redis_url):
    """Start N gateways (daphne, or ``server="uvicorn"``) sharing the test database and one Redis:
    `start(n, server=...) -> [GatewayProcess]`."""
    from django.conf import settings

    started: list[GatewayProcess] = []

    def start(n: int, server: str = "daphne") -> list[GatewayProcess]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "freellm.settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": redis_url,
            "SECRET_KEY": settings.SECRET_KEY,
            "FREELLM_ENCRYPTION_KEYS": settings.FREELLM_ENCRYPTION_KEYS,
            "FREELLM_VAR_DIR": str(settings.VAR_DIR),
            "LOG_LEVEL": "WARNING",
        }
        for _ in range(n):
            started.append(GatewayProcess(env, server))
        return started[-n:]

    yield start
    for gw in started:
        gw.stop()
