"""A tiny HTTP server on 127.0.0.1 that records what is POSTed to it (the alert webhook's receiver in tests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.posts: list[dict] = []
        self.refused = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [post["text"] for post in self.posts]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
