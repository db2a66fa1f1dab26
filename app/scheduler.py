"""Runs each collector on its own thread at its own interval, with back-off while it fails.

One thread per collector means a collector that hangs or crashes delays nobody else. The loop
is drift-free (the next poll is scheduled from the previous deadline, not from "now"), and every
poll's outcome becomes a :class:`~app.records.Health` record, an ``llmmon_source_up`` sample
and, when the state changes, an :class:`~app.records.Event`. What a poll returns is checked:
anything that is not a record, or a sample whose value is not a finite number, is dropped and
logged once per collector rather than passed on (the hub's bounds, :mod:`app.bounds`, judge the
values further).
A collector thread survives any exception: it is counted in :attr:`Scheduler.faults` (logged
once per kind) and the collector backs off; if a thread ends anyway, :meth:`Scheduler.failure`
says which.
Collectors a poll created (discovery's, one per server found:
:meth:`~app.collector.Collector.new_collectors`) are scheduled right after it.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from app.collector import Collector
from app.faults import Faults
from app.records import RECORD_TYPES, Event, Health, HealthState, Record, Sample, labels_of

log = logging.getLogger(__name__)

Publish = Callable[[list[Record]], None]
FAILING = (HealthState.DOWN, HealthState.ERROR)


def backoff_delay(collector: Collector, failures: int) -> float:
    """Seconds until the next poll after ``failures`` consecutive failed polls."""
    if failures <= 0:
        return collector.interval
    return min(collector.interval * 2.0 ** (failures - 1), max(collector.max_backoff, collector.interval))


def clean_records(output: object) -> tuple[list[Record], int]:
    """The valid records in a poll's output, and how many items were rejected."""
    if output is None:
        return [], 0
    if isinstance(output, (str, bytes)) or not isinstance(output, Iterable):
        return [], 1
    records: list[Record] = []
    rejected = 0
    for item in output:
        if not isinstance(item, RECORD_TYPES):
            rejected += 1
            continue
        if isinstance(item, Sample):
            try:
                value = float(item.value)
            except (TypeError, ValueError):
                rejected += 1
                continue
            if not math.isfinite(value) or not isinstance(item.ts, (int, float)):
                rejected += 1
                continue
            if value != item.value or type(item.value) is not float:
                item = replace(item, value=value)
        records.append(item)
    return records, rejected


class _Runner:
    """The thread and bookkeeping of one collector."""

    def __init__(self, collector: Collector, publish: Publish, schedule: Callable[[Collector], None],
                 clock: Callable[[], float], faults: Faults) -> None:
        self.collector = collector
        self.faults = faults
        self.died = ""  # why the thread ended while the scheduler still runs
        self.publish = publish
        self.schedule = schedule
        self.stop = threading.Event()  # this collector only: the scheduler stops, or it was removed
        self.wake = threading.Event()  # poll now instead of at the next deadline
        self.removed = False           # the user removed its source: a poll under way is not published
        self.clock = clock
        self.failures = 0
        self.state = HealthState.UNKNOWN
        self.warned_garbage = False
        self.thread = threading.Thread(target=self.run, name=f"collector-{collector.name}",
                                       daemon=True)

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the user must see it
            self.died = f"collector {self.collector.name} stopped ({type(exc).__name__}: {exc})"
            log.error("%s", self.died)
            log.info("traceback of the stop of collector %s", self.collector.name, exc_info=exc)

    def loop(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # a bug around the poll: count it, back off, go on
                self.faults.record(f"{type(exc).__name__} in collector {self.collector.name}", exc)
                self.failures += 1
            delay = backoff_delay(self.collector, self.failures)
            next_at += delay
            now = time.monotonic()
            if next_at < now:  # fell behind (slow poll, suspend): skip, don't burst
                next_at = now + (delay if self.failures else 0.0)
            if self.wake.wait(max(0.0, next_at - now)):
                self.wake.clear()
                next_at = time.monotonic()  # woken (to poll now, or to stop): the schedule restarts here
        try:
            self.collector.close()
        except Exception:
            log.exception("closing collector %s failed", self.collector.name)

    def poll_once(self) -> None:
        c = self.collector
        started = time.perf_counter()
        try:
            output = c.poll()
        except Exception as exc:  # a collector bug must not kill its thread
            log.debug("collector %s raised", c.name, exc_info=True)
            records: list[Record] = []
            health = Health(c.name, HealthState.ERROR, self.clock(),
                            reason=f"{type(exc).__name__}: {exc}"[:300], kind=c.kind)
        else:
            records, rejected = clean_records(output)
            if rejected and not self.warned_garbage:
                self.warned_garbage = True
                log.warning("collector %s returned %d invalid item(s); they were dropped",
                            c.name, rejected)
            reported = [r for r in records if isinstance(r, Health) and r.source == c.name]
            health = reported[-1] if reported else Health(c.name, HealthState.UP, self.clock(), kind=c.kind)
            records = [r for r in records if not (isinstance(r, Health) and r.source == c.name)]
        if health.latency_s is None:
            health = replace(health, latency_s=time.perf_counter() - started)
        self.failures = self.failures + 1 if health.state in FAILING else 0
        records.append(health)
        records.append(Sample("llmmon_source_up", 1.0 if health.state == HealthState.UP else 0.0,
                              health.ts, labels_of(source=c.name, kind=c.kind)))
        if health.state != self.state:
            if self.state != HealthState.UNKNOWN or health.state != HealthState.UP:
                text = health.state.value + (f": {health.reason}" if health.reason else "")
                records.append(Event(f"source_{health.state.value}", c.name, text, health.ts,
                                     labels_of(kind=c.kind)))
                log.info("%s is %s", c.name, text)
            self.state = health.state
        if self.removed:
            return  # its health would bring a removed server back to the window
        try:
            self.publish(records)
        except Exception as exc:
            self.faults.record(f"{type(exc).__name__} publishing records of {c.name}", exc, n=len(records))
        self.schedule_new()

    def schedule_new(self) -> None:
        """Run the collectors this one created (one that cannot run is counted and closed)."""
        try:
            created = self.collector.new_collectors()
        except Exception as exc:
            self.faults.record(f"{type(exc).__name__} handing over the collectors {self.collector.name} created", exc)
            return
        for new in created:
            try:
                self.schedule(new)
            except Exception as exc:
                self.faults.record(f"cannot schedule a collector from {self.collector.name}", exc, detail=new.name)
                new.close()


class Scheduler:
    """Starts, adds and stops collector threads."""

    def __init__(self, publish: Publish, clock: Callable[[], float] = time.time) -> None:
        self.publish = publish
        self.clock = clock
        self.faults = Faults("scheduler")
        self._stop = threading.Event()
        self._runners: dict[str, _Runner] = {}
        self._started = False
        self._lock = threading.Lock()  # collectors' threads add the collectors they create

    @property
    def collectors(self) -> list[Collector]:
        return [r.collector for r in self._snapshot()]

    def _snapshot(self) -> list[_Runner]:
        with self._lock:
            return list(self._runners.values())

    def add(self, collector: Collector) -> None:
        """Add a collector; it starts at once if the scheduler is running."""
        with self._lock:
            if collector.name in self._runners:
                raise ValueError(f"a collector named {collector.name!r} is already scheduled")
            if self._stop.is_set():  # added during shutdown: never started, nothing to join
                collector.close()
                return
            runner = _Runner(collector, self.publish, self.add, self.clock, self.faults)
            self._runners[collector.name] = runner
            if self._started:
                runner.thread.start()

    def remove(self, name: str) -> bool:
        """Stop polling the collector ``name`` (its thread ends after the poll it may be in,
        then closes it); False when there is none."""
        with self._lock:
            runner = self._runners.pop(name, None)
        if runner is None:
            return False
        runner.removed = True
        runner.stop.set()
        runner.wake.set()
        return True

    def wake(self, name: str) -> None:
        """Poll the collector ``name`` now (e.g. discovery after the user added a server)."""
        with self._lock:
            runner = self._runners.get(name)
        if runner is not None:
            runner.wake.set()

    def start(self) -> None:
        self._started = True
        for runner in self._snapshot():
            if not runner.thread.is_alive():
                runner.thread.start()

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every collector thread; returns the names of any that did not end in time."""
        deadline = time.monotonic() + timeout
        stuck = []
        with self._lock:
            self._stop.set()
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop.set()
            runner.wake.set()
        for runner in runners:
            if runner.thread.ident is None:
                continue
            runner.thread.join(max(0.0, deadline - time.monotonic()))
            if runner.thread.is_alive():
                stuck.append(runner.collector.name)
        if stuck:
            log.error("collector thread(s) did not stop in time: %s", ", ".join(stuck))
        self._started = False
        return stuck

    def failure(self) -> str:
        """Which collector threads ended while they should run, and why (``""`` if none)."""
        return "; ".join(r.died for r in self._snapshot() if r.died and not self._stop.is_set())

    def threads(self) -> list[threading.Thread]:
        return [r.thread for r in self._snapshot()]
