"""The usage side of the running app: keeps the rollup current, records version changes, and
publishes the speed-regression figure for the alert engine.

In the runtime: ``usage = UsageService(store, hub.publish); hub.subscribe(usage.versions);
usage.start()`` ... ``usage.stop()``.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from app.records import Record
from app.storage.store import Store
from app.usage.changes import VersionRecorder
from app.usage.regression import SpeedRatios
from app.usage.rollup import UsageRollup

log = logging.getLogger(__name__)


class UsageService:
    """One thread: a rollup catch-up every ``rollup_interval_s``, the speed ratios every
    ``ratio_interval_s`` (they read the database, so not on every alert tick; often enough that
    the Prometheus exporter, which drops a series unchanged for 2 minutes, keeps them)."""

    def __init__(self, store: Store, publish: Callable[[list[Record]], None], *, rollup_interval_s: float = 60.0,
                 ratio_interval_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self.rollup = UsageRollup(store, clock=clock)
        self.versions = VersionRecorder(publish)
        self.ratios = SpeedRatios()
        self.rollup_interval_s = rollup_interval_s
        self.ratio_interval_s = ratio_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="llmmon-usage", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.rollup.stop()  # ends a catch-up between two chunks
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def publish_ratios(self) -> None:
        conn = self.store.reader()
        try:
            samples: list[Record] = [*self.ratios.samples(conn, self.clock())]
        finally:
            conn.close()
        if samples:
            self.publish(samples)

    def _run(self) -> None:
        next_ratios = 0.0
        while not self._stop.is_set():
            try:
                self.rollup.catch_up()
            except Exception:  # retried next tick; recording goes on
                log.exception("usage rollup failed")
            if time.monotonic() >= next_ratios:
                next_ratios = time.monotonic() + self.ratio_interval_s
                try:
                    self.publish_ratios()
                except sqlite3.Error as exc:
                    log.warning("speed ratios: %s", exc)
            self._stop.wait(self.rollup_interval_s)
