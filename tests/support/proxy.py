"""Fixtures and checks shared by the proxy tests: a simulated upstream, a proxy in front of it
collecting its records, and the leak check every fault test ends with."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from app.proxy import ForwardOptions, ProxyServer
from app.records import Record, RequestRecord
from tests.sim.upstream import SimUpstream, chunks_of, recording
from tests.support import wait_until


class Records:
    """A thread-safe ``publish`` target that keeps what the proxy published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[RequestRecord] = []

    def __call__(self, records: list[Record]) -> None:
        with self._lock:
            self.items.extend(r for r in records if isinstance(r, RequestRecord))

    def wait(self, n: int, timeout: float = 10.0) -> list[RequestRecord]:
        wait_until(lambda: len(self.items) >= n, timeout, what=f"{n} request records")
        with self._lock:
            return list(self.items)


class Proxied:
    """A running simulated upstream with a proxy in front of it."""

    def __init__(self, up: SimUpstream, proxy: ProxyServer, records: Records) -> None:
        self.up, self.proxy, self.records = up, proxy, records

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def assert_no_leaks(self) -> None:
        """Nothing in flight, no task or client connection left on the proxy's loop (the
        test's clients must be closed first), nothing still being answered upstream."""
        wait_until(lambda: self.proxy.diagnostics() == {"tasks": 1, "client_connections": 0,
                                                        "active_requests": 0},
                   timeout=10, what=f"proxy to settle, now {self.proxy.diagnostics()}")
        wait_until(lambda: self.up.in_flight == 0, timeout=10, what="upstream handlers to end")


def start_proxied(options: ForwardOptions | None = None, **proxy_kwargs: object) -> Proxied:
    up = SimUpstream().start()
    records = Records()
    proxy = ProxyServer(up.url, publish=records, options=options, **proxy_kwargs)
    proxy.start()
    return Proxied(up, proxy, records)


@pytest.fixture
def proxied() -> Iterator[Proxied]:
    p = start_proxied()
    yield p
    p.proxy.stop()
    p.up.stop()


def json_chunks(name: str) -> list[dict]:
    """The JSON objects of a recorded stream, parsed here independently of the meter."""
    out = []
    for chunk in chunks_of(name):
        text = chunk.strip()
        if text.startswith(b"data:"):
            text = text[5:].strip()
            if text == b"[DONE]":
                continue
        out.append(json.loads(text))
    return out


def recorded_json(name: str) -> dict:
    return json.loads(recording(name))
