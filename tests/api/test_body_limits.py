"""Request bodies are refused before they are read: a declared length above the limit at once, a chunked
body as soon as it passes the limit, a body without a valid key before any of it is read; with the
in-thread test server (uvicorn) and with daphne, the server freellm runs on."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

CHAT = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _head(url: str, path: str, headers: dict[str, str]) -> bytes:
    host = url.split("//", 1)[1]
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _connect(url: str) -> socket.socket:
    host, port = url.split("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(10)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body or b"{}")


def _declared_too_large(url: str, key: str) -> tuple[int, dict]:
    with _connect(url) as sock:
        sock.sendall(_head(url, "/v1/chat/completions", {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
            "Content-Length": str(10 * 1024**3)}))
        status, _, body = _response(sock)  # no byte of the 10 GB sent
    return status, body


def _chunked_past_the_limit(url: str, key: str, limit: int) -> tuple[int, dict, int]:
    sent = 0
    with _connect(url) as sock:
        sock.sendall(_head(url, "/v1/chat/completions", {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        piece = b"x" * 4096
        try:
            # Stop sending as soon as the answer is there (more bytes into a closed socket would reset it).
            while sent < limit * 50 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except OSError:
            pass  # the server answered and closed: what we wait for
        status, _, body = _response(sock)
    return status, body, sent


def _keyless_body_unread(url: str, key: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Content-Length": str(32 * 1024)}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    with _connect(url) as sock:
        sock.sendall(_head(url, "/v1/chat/completions", headers))  # and none of the declared 32 KB
        status, _, body = _response(sock)
    return status, body


def _assert_openai_error(body: dict, code: str) -> None:
    assert set(body["error"]) >= {"message", "type", "param", "code"} and body["error"]["code"] == code


def test_a_declared_length_above_the_limit_is_a_413_at_once(gateway):
    status, body = _declared_too_large(gateway.url, gateway.api_key)
    assert status == 413
    _assert_openai_error(body, "request_too_large")


def test_a_chunked_body_is_cut_off_at_the_limit(gateway, settings):
    settings.FREELLM_MAX_JSON_BODY_BYTES = 64 * 1024
    status, body, sent = _chunked_past_the_limit(gateway.url, gateway.api_key, 64 * 1024)
    assert status == 413
    _assert_openai_error(body, "request_too_large")
    assert sent < 64 * 1024 * 50


@pytest.mark.parametrize("key", [None, "fl-not-a-real-key"])
def test_no_body_is_read_without_a_valid_key(gateway, key):
    status, body = _keyless_body_unread(gateway.url, key)
    assert status == 401
    _assert_openai_error(body, "invalid_api_key")


def test_a_multipart_body_without_a_boundary_is_a_400_naming_it(gateway):
    import httpx

    resp = httpx.post(f"{gateway.base_url}/audio/transcriptions", content=b"--x\r\n\r\n",
                      headers={"Authorization": f"Bearer {gateway.api_key}", "Content-Type": "multipart/form-data"})
    assert resp.status_code == 400
    _assert_openai_error(resp.json(), "invalid_multipart")


@pytest.fixture
def daphne_gateway(transactional_db, django_user_model):
    import os

    from django.conf import settings

    from routing.services import api_key_create
    from tests.fixtures_processes import GatewayProcess, _database_url

    user = django_user_model.objects.create_user("bob", password="x")
    _, raw = api_key_create(user=user, name="daphne")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "freellm.settings", "DATABASE_URL": _database_url(),
           "SECRET_KEY": settings.SECRET_KEY, "FREELLM_ENCRYPTION_KEYS": settings.FREELLM_ENCRYPTION_KEYS,
           "FREELLM_VAR_DIR": str(settings.VAR_DIR), "LOG_LEVEL": "WARNING",
           "FREELLM_MAX_JSON_BODY_BYTES": str(64 * 1024)}
    env.pop("REDIS_URL", None)
    process = GatewayProcess(env)
    yield process, raw
    process.stop()


def test_daphne_refuses_bodies_before_reading_them(daphne_gateway):
    process, key = daphne_gateway
    started = time.monotonic()

    status, body = _declared_too_large(process.url, key)
    assert status == 413
    _assert_openai_error(body, "request_too_large")

    status, body, sent = _chunked_past_the_limit(process.url, key, 64 * 1024)
    assert status == 413 and sent < 64 * 1024 * 50

    for wrong in (None, "fl-not-a-real-key"):
        status, body = _keyless_body_unread(process.url, wrong)
        assert status == 401
        _assert_openai_error(body, "invalid_api_key")
    assert time.monotonic() - started < 30  # none of them waited for a body that never came


def test_daphne_still_serves_a_request_with_a_good_key(daphne_gateway):
    import httpx

    process, key = daphne_gateway
    resp = httpx.post(f"{process.url}/v1/chat/completions", content=CHAT,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    # No chain named "auto" here: the request was read, authenticated and routed.
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"


def test_daphne_reads_a_known_keys_body_at_once_and_still_authenticates_it(daphne_gateway, settings):
    import httpx

    from routing.models import ApiKey
    from routing.services import api_key_revoke
    from tests.polling import wait_until

    process, key = daphne_gateway
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=process.url, headers=headers, timeout=10) as client:
        # The first request is checked before its body is read; the next ones take the key as known.
        for _ in range(3):
            resp = client.post("/v1/chat/completions", content=CHAT)
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
        # That gateway runs without Redis: the config version it watches is the file under var/.
        settings.REDIS_URL = ""
        api_key_revoke(api_key=ApiKey.objects.get())
        # The front door's own check refuses it once the gateway sees the change, known key or not.
        assert wait_until(lambda: client.post("/v1/chat/completions", content=CHAT).status_code == 401,
                          timeout=15, interval=0.2)
