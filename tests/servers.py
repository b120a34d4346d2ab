"""Run an ASGI app on a real 127.0.0.1 socket in a background thread (emulator, gateway under test)."""

from __future__ import annotations

import asyncio
import threading

import uvicorn

from tests.polling import wait_until


class ServerThread:
    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> ServerThread:
        self.thread.start()
        if not wait_until(lambda: self.server.started, timeout=10, interval=0.01, alive=self.thread.is_alive):
            raise RuntimeError("test server did not start")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
