"""Run the emulator alone: ``python -m tests.emulator --port 9999`` (``--port 0`` picks a free port)."""

from __future__ import annotations

import argparse
import socket

import uvicorn

from .app import create_app
from .behaviour import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description="freellm upstream emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds")
    args = parser.parse_args()
    # Bind first so the printed URL carries the real port, even for --port 0.
    # proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY (else keep-alive answers wait ~40 ms on Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    # Listen before printing: a client reading the URL may connect before uvicorn is up; the backlog holds it.
    sock.listen(128)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    print(f"emulator listening on {url}  (e.g. base_url {url}/groq/v1)", flush=True)
    config = uvicorn.Config(create_app(Engine(window=args.window)), log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
