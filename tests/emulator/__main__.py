"""Run the emulator alone: ``python -m tests.emulator --port 9999``."""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app
from .behaviour import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description="freellm upstream emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds")
    args = parser.parse_args()
    print(f"emulator listening on http://{args.host}:{args.port}  (e.g. base_url http://{args.host}:{args.port}/groq/v1)",
          flush=True)
    uvicorn.run(create_app(Engine(window=args.window)), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
