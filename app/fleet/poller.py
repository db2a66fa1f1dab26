"""Reads the fleet from one Prometheus on a thread of its own, so that the window (and the local
monitor) never waits for it: the GUI tells the poller what it shows (:meth:`FleetPoller.want`)
and reads the latest answers (:meth:`snapshot`, :meth:`history`, :meth:`status`) without
blocking. A Prometheus that is down or slow costs the thread at most the client's timeout per
question; its last good reading stays available, marked by the status.

The poller only asks while someone looks: when :meth:`want` has not been called for
``idle_after`` seconds (the Fleet tab is hidden) it waits without asking.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.config import PrometheusSource
from app.fleet.client import PrometheusClient, PrometheusError
from app.fleet.model import FleetSnapshot, SeriesSet, read_fleet, read_history

log = logging.getLogger(__name__)

SLOW_S = 2.0
"""An answer that took longer than this shows as slow."""


@dataclass(frozen=True)
class PollerStatus:
    """How the Prometheus source is doing, for the status line."""

    state: str                      # "starting", "ok", "slow", "down"
    error: str = ""                 # why it is down
    last_ok_at: float | None = None  # wall-clock time of the last good reading
    took_s: float = 0.0             # how long the last good reading took
    waiting_s: float = 0.0          # how long the question in flight has been waiting


@dataclass(frozen=True)
class _Want:
    instance: str
    start: float
    end: float
    live: bool


class FleetPoller:
    """Asks one Prometheus every ``interval`` seconds, while wanted.

    Args:
        source: the ``[[prometheus]]`` entry.
        interval: seconds between readings (and between chart refreshes of a live range).
        idle_after: stop asking when nobody wanted anything for this long.
        client_factory: builds the client (tests pass one with another timeout).
    """

    def __init__(self, source: PrometheusSource, interval: float = 5.0, idle_after: float = 30.0,
                 client_factory: Callable[[PrometheusSource], PrometheusClient] = PrometheusClient.for_source) -> None:
        self.source = source
        self.interval = interval
        self.idle_after = idle_after
        self.client_factory = client_factory
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._want: _Want | None = None
        self._wanted_at = -float("inf")     # monotonic
        self._snapshot: FleetSnapshot | None = None
        self._history: SeriesSet | None = None
        self._history_at = -float("inf")    # monotonic time of the last history reading
        self._snapshot_at = -float("inf")
        self._error = ""
        self._busy_since: float | None = None

    # ------------------------------------------------------------------ GUI side (never blocks)
    def want(self, instance: str, start: float, end: float, live: bool) -> None:
        """What the window shows now: the machine whose charts are open (``""``: none) over
        ``[start, end]``. Call it on every UI tick of the Fleet tab; it keeps the poller asking."""
        want = _Want(instance, start, end, live)
        with self._lock:
            changed = self._want is None or _moved(self._want, want)
            self._want = want
            self._wanted_at = time.monotonic()
        if self._thread is None:
            self.start()
        if changed:
            self._wake.set()

    def snapshot(self) -> FleetSnapshot | None:
        """The last good reading of the fleet (kept while Prometheus is down), or None yet."""
        with self._lock:
            return self._snapshot

    def history(self) -> SeriesSet | None:
        """The last reading of the wanted machine's chart series (None before the first)."""
        with self._lock:
            return self._history

    def status(self) -> PollerStatus:
        with self._lock:
            snapshot, error, busy = self._snapshot, self._error, self._busy_since
        waiting = time.monotonic() - busy if busy is not None else 0.0
        last_ok = snapshot.fetched_at if snapshot else None
        took = snapshot.took_s if snapshot else 0.0
        if error:
            return PollerStatus("down", error, last_ok, took, waiting)
        if snapshot is None:
            return PollerStatus("starting", "", None, 0.0, waiting)
        slow = took > SLOW_S or waiting > SLOW_S
        return PollerStatus("slow" if slow else "ok", "", last_ok, took, waiting)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"llmmon-fleet {self.source.url}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        client = self.client_factory(self.source)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                asked = self._step(client)
                self._wake.wait(self._sleep() if asked else self.interval)  # idle: a wish wakes it
        finally:
            client.close()

    def _sleep(self) -> float:
        """Until the next reading is due (a new wish wakes the thread earlier)."""
        with self._lock:
            charts = self._want is not None and bool(self._want.instance)
        due = self._snapshot_at + self.interval
        if charts:
            due = min(due, self._history_at + self.interval)
        return min(self.interval, max(0.05, due - time.monotonic()))

    def _step(self, client: PrometheusClient) -> bool:
        """Ask what is due; False when nobody looks (nothing asked)."""
        now = time.monotonic()
        with self._lock:
            want, wanted_at, history = self._want, self._wanted_at, self._history
        if want is None or now - wanted_at > self.idle_after:
            return False
        if now - self._snapshot_at >= self.interval:
            self._snapshot_at = now
            self._ask(lambda: self._store_snapshot(read_fleet(client)))
        if want.instance and (history is None or _moved(_want_of(history, want.live), want)
                              or (want.live and now - self._history_at >= self.interval)):
            self._history_at = time.monotonic()
            self._ask(lambda: self._store_history(read_history(client, want.instance, want.start, want.end)))
        return True

    def _ask(self, question: Callable[[], None]) -> None:
        with self._lock:
            self._busy_since = time.monotonic()
        try:
            question()
            error = ""
        except PrometheusError as exc:
            error = str(exc)
        except Exception as exc:  # the fleet view must never take the poller down
            log.exception("reading the fleet from %s failed", self.source.url)
            error = f"{type(exc).__name__}: {exc}"
        if error and error != self._error:
            log.warning("prometheus %s: %s", self.source.url, error)
        with self._lock:
            self._busy_since = None
            self._error = error

    def _store_snapshot(self, snapshot: FleetSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def _store_history(self, history: SeriesSet) -> None:
        with self._lock:
            self._history = history


def _want_of(history: SeriesSet, live: bool) -> _Want:
    return _Want(history.instance, history.start, history.end, live)


def _moved(old: _Want, new: _Want) -> bool:
    """Whether the charts need another reading now: another machine, another span, or (for a
    fixed range) another range. A live range moving with the clock waits for the interval."""
    if old.instance != new.instance or old.live != new.live:
        return True
    if abs((old.end - old.start) - (new.end - new.start)) > 1.0:
        return True
    return not new.live and (old.start, old.end) != (new.start, new.end)
