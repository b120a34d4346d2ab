"""An upstream emulator: many LLM providers' wire formats over real HTTP on 127.0.0.1.

One server emulates every provider; the first path segment names the provider, e.g. base_url
``emulator.base_url("groq")`` == ``http://127.0.0.1:PORT/groq/v1``. Behaviour is driven by the API key;
the key grammar is documented in ``tests.emulator.behaviour``.

    emulator = Emulator().start()
    emulator.url                       # http://127.0.0.1:PORT
    emulator.calls                     # list[CallRecord], oldest first
    emulator.calls_for(key=..., name=..., provider=..., path=...)
    emulator.reset()                   # clears records, fail counters, rate windows
    emulator.stop()
"""

from __future__ import annotations

from .app import create_app
from .behaviour import CallRecord, Engine, KeySpec, parse_key

__all__ = ["CallRecord", "Emulator", "Engine", "KeySpec", "create_app", "parse_key"]


class Emulator:
    def __init__(self, *, window: float = 60.0) -> None:
        self.engine = Engine(window=window)
        self.app = create_app(self.engine)
        self._server = None

    def start(self, port: int = 0) -> Emulator:
        from tests.servers import ServerThread

        self._server = ServerThread(self.app, port=port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            # Let hanging handlers return so uvicorn can close their connections.
            self.engine.closing = True
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return self._server.url

    def base_url(self, provider: str, suffix: str = "v1") -> str:
        """``http://127.0.0.1:PORT/<provider>/<suffix>`` (suffix may be empty)."""
        return f"{self.url}/{provider}" + (f"/{suffix.strip('/')}" if suffix else "")

    @property
    def calls(self) -> list[CallRecord]:
        return self.engine.calls

    def calls_for(self, **filters) -> list[CallRecord]:
        return self.engine.calls_for(**filters)

    def reset(self) -> None:
        self.engine.reset()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
