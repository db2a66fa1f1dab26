"""A real HTTP server on 127.0.0.1 that records the webhook POSTs it receives (for the tests).

In slow mode (``trickle`` set) it answers like a stuck endpoint behind a bad proxy: headers for
a megabyte-long body, then one byte every ``trickle`` seconds, so no single read ever waits
long enough to time out and the answer never completes. ``release()`` ends every trickle
(the connection is closed mid-answer) and makes later requests fail at once the same way.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    body: dict


class WebhookReceiver:
    """Answers every POST with ``status`` and keeps what it got in ``received``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.trickle: float | None = None   # seconds between the bytes of a never-ending answer
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                receiver.received.append(Received(self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(receiver.status)
                if receiver.trickle is None:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    while not receiver.released.wait(receiver.trickle):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                except OSError:  # the client gave up (its deadline): what a stuck endpoint sees
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.release()
    receiver.server.shutdown()
    receiver.server.server_close()
