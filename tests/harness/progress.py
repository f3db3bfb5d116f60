"""A stand-in for rank 0's ``/progress`` endpoint (the trainer's contract, faked) on a free local port."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeProgress(BaseHTTPRequestHandler):
    """Serves ``report`` as JSON on ``/progress``; a test swaps ``report`` to move the trainer on."""

    report: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.report).encode()
        self.send_response(200 if self.path == "/progress" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_progress(report: dict[str, Any]) -> Iterator[tuple[int, type[FakeProgress]]]:
    """Serve ``report`` on a free port; yields the port and the handler class (set ``.report`` on it)."""
    handler = type("Handler", (FakeProgress,), {"report": report})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
