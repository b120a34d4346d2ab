"""Production: `check --deploy` clean, cookies Secure, HTTPS behind a TLS-terminating proxy; a deactivated
user's or revoked key refused within a second; SQLite in WAL mode."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _production_env(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREELLM_", "DJANGO_")) and k != "DATABASE_URL"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "freellm.settings",
        "FREELLM_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "FREELLM_ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "FREELLM_VAR_DIR": str(tmp_path),
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    })
    return env


def test_check_deploy_is_clean_in_production(tmp_path):
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=_production_env(tmp_path), capture_output=True, text=True)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


_REQUESTS = """
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
client = Client()
plain = client.get("/admin/login/")
proxied = client.get("/admin/login/", headers={"X-Forwarded-Proto": "https"})
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location", "")],
    "proxied": [proxied.status_code, proxied.get("Strict-Transport-Security", "")],
    "csrf_secure": bool(proxied.cookies["csrftoken"]["secure"]),
}))
"""


def test_production_cookies_are_secure_and_plain_http_is_redirected_behind_a_tls_proxy(tmp_path):
    env = _production_env(tmp_path, FREELLM_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO=https")
    done = subprocess.run([sys.executable, "-c", _REQUESTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["plain"][0] == 301 and seen["plain"][1].startswith("https://")
    assert seen["proxied"][0] == 200 and "max-age=31536000" in seen["proxied"][1]
    assert seen["csrf_secure"] is True


def _refused_within(gateway, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds + 1:
        resp = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {gateway.api_key}"})
        if resp.status_code == 401:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"the key still worked {seconds + 1:.0f} s later")


def test_a_deactivated_users_key_is_refused_within_a_second(gateway, django_user_model):
    assert httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {gateway.api_key}"}).is_success
    user = django_user_model.objects.get(username="alice")
    user.is_active = False
    user.save()

    assert _refused_within(gateway, 1.0) <= 1.2


def test_a_revoked_key_is_refused_within_a_second(gateway):
    from routing.models import ApiKey
    from routing.services import api_key_revoke

    assert httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {gateway.api_key}"}).is_success
    api_key_revoke(api_key=ApiKey.objects.get())

    assert _refused_within(gateway, 1.0) <= 1.2


@pytest.mark.django_db
def test_the_embedded_sqlite_database_runs_in_wal_mode():
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the embedded default is SQLite")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
