"""Live request figures for the dashboard, computed from the request records (proxy and
prompt test alike) and published through the hub as samples once a second.

Series (names from docs/metrics.md), per ``server`` label:

* ``llm_requests_active{server}`` — requests in flight (from the gauges registered with
  :meth:`RequestStats.watch_active`, e.g. each proxy's counter);
* ``llm_requests_per_second{server}``, ``llm_errors_per_second{server}``,
  ``llm_error_ratio{server}`` — over the last ``rate_window_s`` seconds of finished requests;
* ``llm_tokens_per_second{server,model}`` — completion tokens of the requests finished in that
  window, per second;
* ``llm_ttft_seconds{server,quantile}``, ``llm_request_latency_seconds{server,quantile}`` —
  0.5 / 0.9 / 0.99 over the last ``quantile_window_s`` seconds (successful requests only;
  omitted while there are none);
* ``llm_request_tokens_per_second{server,model}`` — each finished request's decode speed (the
  server's own figure when it gave one), stamped at the request's end.

A request that never reached its server (:attr:`~app.records.RequestRecord.reached_server`:
the proxy's 502 for a server that is not there) starts no series: it is listed in
:meth:`RequestStats.recent`, and counts as a failed request only for a server that already
has series (one that answered before, or whose proxy runs); its model gets no series.

It also keeps the most recent records for the requests table (:meth:`recent`).

In the app, ``stats = RequestStats(hub.publish); hub.subscribe(stats); stats.start()``. By hand:

>>> stats = RequestStats(print)
>>> stats([RequestRecord(ts_start=100.0, server="ollama", endpoint="/api/chat", model="llama3",
...                      status=200, latency_s=2.0, completion_tokens=50)])
>>> {s.name: s.value for s in stats.compute(now=103.0) if s.name.endswith("per_second")}
{'llm_requests_per_second': 0.1, 'llm_errors_per_second': 0.0, 'llm_tokens_per_second': 5.0}
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from app.records import Record, RequestRecord, Sample, labels_of

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99)


def end_time(record: RequestRecord) -> float:
    return record.ts_start + (record.latency_s or 0.0)


class _Done(NamedTuple):
    """What the windows need of a finished request (half a record's memory: at 1,000
    requests/s a minute's window holds 60,000 of them)."""

    end: float
    server: str
    model: str
    ok: bool
    reached: bool
    tokens: int
    ttft_s: float | None
    latency_s: float | None

    @classmethod
    def of(cls, r: RequestRecord) -> _Done:
        return cls(end_time(r), r.server, r.model, r.ok, r.reached_server, r.completion_tokens or 0,
                   r.ttft_s, r.latency_s)


class RequestStats:
    """Sliding-window statistics over request records; a hub subscriber with its own ticker.

    Args:
        publish: where the samples go (``Hub.publish``).
        interval: seconds between publications.
        rate_window_s: window of the per-second rates.
        quantile_window_s: window of the TTFT and latency percentiles.
        recent: how many records :meth:`recent` keeps for the table.
        clock: wall-clock source (UTC epoch seconds); injectable for tests.
    """

    def __init__(self, publish: Callable[[list[Record]], None], *, interval: float = 1.0,
                 rate_window_s: float = 10.0, quantile_window_s: float = 60.0,
                 recent: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.publish = publish
        self.interval = interval
        self.rate_window_s = rate_window_s
        self.quantile_window_s = quantile_window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window: collections.deque[_Done] = collections.deque()
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=recent)
        self._fresh: list[RequestRecord] = []     # finished since the last tick
        self._servers: set[str] = set()
        self._gauges: dict[str, Callable[[], int]] = {}
        self._version = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ inputs
    def __call__(self, records: Sequence[Record]) -> None:
        """Hub subscriber: keep the request records of a published batch (quick, thread-safe)."""
        requests = [r for r in records if isinstance(r, RequestRecord)]
        if not requests:
            return
        reached = [r for r in requests if r.reached_server]
        with self._lock:
            self._servers.update(r.server for r in reached)
            self._window.extend(_Done.of(r) for r in requests if r.reached_server or r.server in self._servers)
            self._recent.extend(requests)
            self._fresh.extend(reached)
            self._version += 1

    def watch_active(self, server: str, gauge: Callable[[], int]) -> Callable[[], None]:
        """Report ``gauge()`` as the in-flight requests of ``server``; returns an unwatch."""
        with self._lock:
            self._gauges[server] = gauge
            self._servers.add(server)

        def unwatch() -> None:
            with self._lock:
                if self._gauges.get(server) is gauge:
                    del self._gauges[server]
        return unwatch

    # ------------------------------------------------------------------ outputs
    def recent(self) -> tuple[int, list[RequestRecord]]:
        """``(version, records)``: the newest records first; the version changes with them."""
        with self._lock:
            return self._version, list(reversed(self._recent))

    def compute(self, now: float | None = None) -> list[Sample]:
        """The samples for instant ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        with self._lock:
            horizon = now - max(self.rate_window_s, self.quantile_window_s)
            while self._window and self._window[0].end < horizon:
                self._window.popleft()
            window = list(self._window)
            fresh, self._fresh = self._fresh, []
            servers = sorted(self._servers)
            gauges = dict(self._gauges)
        samples: list[Sample] = []
        for server in servers:
            mine = [r for r in window if r.server == server]
            samples += self._server_samples(server, mine, gauges.get(server), now)
        for r in fresh:
            speed = r.server_tokens_per_s or r.client_tokens_per_s
            if speed:
                samples.append(Sample("llm_request_tokens_per_second", speed, end_time(r),
                                      labels_of(server=r.server, model=r.model)))
        return samples

    def _server_samples(self, server: str, records: list[_Done],
                        gauge: Callable[[], int] | None, now: float) -> list[Sample]:
        label = labels_of(server=server)
        out: list[Sample] = []
        if gauge is not None:
            try:
                out.append(Sample("llm_requests_active", float(gauge()), now, label))
            except Exception:  # a gauge of a stopped proxy must not break the others
                log.exception("active-requests gauge of %s failed", server)
        w = self.rate_window_s
        recent = [r for r in records if r.end > now - w]
        errors = sum(1 for r in recent if not r.ok)
        out.append(Sample("llm_requests_per_second", len(recent) / w, now, label))
        out.append(Sample("llm_errors_per_second", errors / w, now, label))
        out.append(Sample("llm_error_ratio", errors / len(recent) if recent else 0.0, now, label))
        tokens: dict[str, float] = collections.defaultdict(float)
        for r in recent:
            if r.reached:  # a model named in a request the server never saw is not a model
                tokens[r.model] += r.tokens
        for model, total in sorted(tokens.items()):
            out.append(Sample("llm_tokens_per_second", total / w, now,
                              labels_of(server=server, model=model)))
        ok = [r for r in records if r.ok and r.end > now - self.quantile_window_s]
        out += _quantiles("llm_ttft_seconds", [r.ttft_s for r in ok if r.ttft_s is not None], server, now)
        out += _quantiles("llm_request_latency_seconds",
                          [r.latency_s for r in ok if r.latency_s is not None], server, now)
        return out

    # ------------------------------------------------------------------ ticking
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="llmmon-request-stats", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            deadline += self.interval  # drift-free: scheduled from the previous deadline
            try:
                samples: list[Record] = [*self.compute()]
                if samples:
                    self.publish(samples)
            except Exception:
                log.exception("request statistics failed")


def _quantiles(name: str, values: Iterable[float], server: str, now: float) -> list[Sample]:
    data = np.fromiter(values, dtype=np.float64)
    if not len(data):
        return []
    points = np.quantile(data, QUANTILES)
    return [Sample(name, float(v), now, labels_of(server=server, quantile=str(q)))
            for q, v in zip(QUANTILES, points, strict=True)]
