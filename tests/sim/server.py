"""A small threaded HTTP server on 127.0.0.1 for simulated LLM servers (real sockets, real HTTP).

Routes are plain functions returning a :class:`Reply`; a *fault* set on the server answers every
request instead of the routes, to play the ways real servers go wrong: an HTML error page,
garbage bytes, a body cut short, a hang, or a status code. :meth:`SimServer.go_down` closes the
listening socket (clients get "connection refused"), :meth:`SimServer.come_back` listens again
on the same port.

    with SimServer({"/hello": lambda req: Reply.json({"hi": 1})}) as sim:
        httpx.get(sim.url + "/hello").json()
"""
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HANG_S = 30.0  # how long a hanging reply stalls (or until the server stops)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What the simulated server answers.

    Args:
        truncate_at: send only this many bytes of ``body`` (with the full Content-Length), then
            close the connection — a stream cut mid-way.
        hang: accept the request and say nothing for :data:`HANG_S` seconds.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    truncate_at: int | None = None
    hang: bool = False

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Reply:
        return cls(status, json.dumps(payload).encode())

    @classmethod
    def text(cls, text: str | bytes, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Reply:
        return cls(status, text.encode() if isinstance(text, str) else text, content_type)


Route = Callable[[Request], Reply]

HTML_ERROR = Reply.text("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
                        "<body><h1>Bad Gateway</h1><p>nginx</p></body></html>", 502, "text/html")
HTML_PAGE = Reply.text("<!doctype html><html><head><title>My blog</title></head><body>Hello</body></html>",
                       200, "text/html; charset=utf-8")
GARBAGE = Reply(200, bytes(range(256)) * 4, "application/octet-stream")
HANG = Reply(hang=True)
NOT_FOUND = Reply.text("404 page not found", 404)


def truncated(reply: Reply, keep: float = 0.5) -> Reply:
    """``reply`` cut after ``keep`` of its body."""
    return Reply(reply.status, reply.body, reply.content_type, truncate_at=int(len(reply.body) * keep))


@dataclass
class _State:
    routes: dict[str, Route]
    fault: Route | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def _serve(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path.split("?", 1)[0], dict(self.headers.items()), body)
        with state.lock:
            state.requests.append(request)
            route = state.fault or state.routes.get(request.path)
        reply = route(request) if route else NOT_FOUND
        if reply.hang:
            state.stopping.wait(HANG_S)
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        if reply.truncate_at is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.truncate_at is not None:
            self.wfile.write(reply.body[: reply.truncate_at])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(reply.body)

    do_GET = do_POST = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: _State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.state.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.state.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive connections too: a server that went down answers nobody."""
        with self.state.lock:
            connections, self.connections = list(self.connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class SimServer:
    """A simulated server. Subclasses add routes and state; tests flip faults and up/down."""

    def __init__(self, routes: dict[str, Route] | None = None, port: int = 0) -> None:
        self._state = _State(dict(routes or {}))
        self.port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, path: str, fn: Route) -> None:
        with self._state.lock:
            self._state.routes[path] = fn

    def set_fault(self, fault: Reply | Route | None) -> None:
        """Answer every request with ``fault`` (a reply or a route); ``None`` heals."""
        with self._state.lock:
            self._state.fault = (lambda _req: fault) if isinstance(fault, Reply) else fault

    @property
    def requests(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.requests)

    def start(self) -> Self:
        self._state.stopping.clear()
        self._httpd = _HTTPServer(self.port, self._state)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()  # releases hanging replies
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.drop_connections()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def go_down(self) -> None:
        """Stop listening: clients now get "connection refused" on this port."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
