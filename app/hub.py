"""The hub: the only place that fans records out.

Collectors (through the scheduler), the proxy and the prompt test panel publish records here;
the hub checks them against the bounds (:mod:`app.bounds`), hands them to the store, to the
live ring buffers, keeps the latest health per source, and calls subscribers (the request
statistics; the alert engine reads the buffers on its own tick). Subscribers run on the
publishing thread: they must be quick and thread-safe. A consumer that raises loses that batch
only; the failure is counted in :attr:`Hub.faults` and logged once per kind. The GUI subscribes
to nothing: it reads the buffers, ``health`` and :meth:`Hub.dropped` on its own UI timer.

The hub knows collectors only through :class:`~app.collector.Collector`; which ones run is
decided by :mod:`app.runtime`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from app.bounds import Bounds
from app.buffers import LiveBuffers
from app.collector import Collector
from app.faults import Faults
from app.records import Health, Record, Sample
from app.scheduler import Scheduler
from app.storage.store import Store

log = logging.getLogger(__name__)

Subscriber = Callable[[list[Record]], None]


class Hub:
    """Fans records out to the store, the live buffers and subscribers; owns the scheduler."""

    def __init__(self, store: Store | None, buffers: LiveBuffers | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.buffers = buffers or LiveBuffers()
        self.clock = clock
        self.scheduler = Scheduler(self.publish, clock)
        self.bounds = Bounds(clock=clock)
        self.faults = Faults("hub")
        self.health: dict[str, Health] = {}
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def add_collectors(self, collectors: Iterable[Collector]) -> None:
        """Run these collectors (each on its own thread, from :meth:`start` or at once)."""
        for collector in collectors:
            self.scheduler.add(collector)

    def remove_source(self, name: str) -> None:
        """Stop the collector ``name`` and forget its health (its recorded data stays)."""
        self.scheduler.remove(name)
        self.health.pop(name, None)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(records)`` for every published batch; returns an unsubscribe function."""
        with self._lock:
            self._subscribers = [*self._subscribers, fn]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not fn]
        return unsubscribe

    def publish(self, records: list[Record]) -> None:
        """Check a batch against the bounds and hand it to every consumer. Thread-safe; never
        raises."""
        if not records:
            return
        records = self.bounds.check(records)
        if self.store is not None:
            self._deliver("the store", self.store.put, records)
        self._deliver("the live buffers", lambda rs: self.buffers.add(r for r in rs if isinstance(r, Sample)), records)
        for r in records:
            if isinstance(r, Health):
                self.health[r.source] = r
        for fn in self._subscribers:  # copy-on-write list: no lock needed to iterate
            self._deliver(f"subscriber {getattr(fn, '__qualname__', type(fn).__qualname__)}", fn, records)

    def _deliver(self, who: str, fn: Callable[[list[Record]], object], records: list[Record]) -> None:
        try:
            fn(records)
        except Exception as exc:
            self.faults.record(f"{type(exc).__name__} in {who}", exc, n=len(records))

    def dropped(self) -> str:
        """What was dropped on the way in, by reason (``""`` when nothing): the bounds, and
        batches a consumer failed on."""
        return ", ".join(s for s in (self.bounds.faults.summary(), self.faults.summary()) if s)

    def failure(self) -> str:
        """Why a thread that must run has stopped (``""`` while all run)."""
        return self.scheduler.failure()

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop the collectors (joining their threads); the store is closed by its owner."""
        return self.scheduler.stop(timeout)
