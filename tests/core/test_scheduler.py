"""The scheduler and hub: misbehaving collectors never take the others down."""
from __future__ import annotations

import threading
from pathlib import Path

from app.collector import Collector
from app.hub import Hub
from app.records import Event, Health, HealthState, Record, Sample
from app.scheduler import backoff_delay, clean_records
from app.storage.store import Store
from tests.support import query, wait_until


class Counting(Collector):
    kind = "test"

    def __init__(self, name: str, interval: float = 0.01) -> None:
        self.name, self.interval, self.polls = name, interval, 0

    def poll(self) -> list[Record]:
        self.polls += 1
        return [Sample("good_total", float(self.polls), 1000.0 + self.polls)]


class Raising(Counting):
    def poll(self) -> list[Record]:
        self.polls += 1
        raise RuntimeError("boom")


class Garbage(Counting):
    def poll(self):
        self.polls += 1
        return ["not a record", 42, Sample("bad", float("nan"), 1.0),
                Sample("bad", "n/a", 1.0), Sample("fine", "3.5", 1.0)]  # type: ignore[arg-type]


class Hanging(Counting):
    """Blocks in poll (like a server that never answers) until released."""

    def __init__(self, name: str, release: threading.Event) -> None:
        super().__init__(name)
        self.release = release

    def poll(self) -> list[Record]:
        self.polls += 1
        self.release.wait(30)
        return []


class Flaky(Counting):
    """Down while ``down`` is set, like a server that stops and comes back."""

    def __init__(self, name: str) -> None:
        super().__init__(name, interval=0.02)
        self.max_backoff = 0.08
        self.down = threading.Event()

    def poll(self) -> list[Record]:
        self.polls += 1
        if self.down.is_set():
            return [Health(self.name, HealthState.DOWN, 1.0, reason="connection refused")]
        return [Health(self.name, HealthState.UP, 1.0)]


def test_bad_collectors_do_not_stop_the_good_one(db_file: Path) -> None:
    store = Store(db_file)
    store.start()
    hub = Hub(store)
    release = threading.Event()
    good, raising, garbage, hanging = (Counting("good"), Raising("raising"), Garbage("garbage"),
                                       Hanging("hanging", release))
    hub.add_collectors([good, raising, garbage, hanging])
    hub.start()
    wait_until(lambda: good.polls >= 20 and raising.polls >= 2 and garbage.polls >= 2,
               what="all collectors to be polled")
    assert hanging.polls == 1  # still stuck in its first poll, yet the others ran on
    assert hub.health["raising"].state == HealthState.ERROR
    assert "RuntimeError: boom" in hub.health["raising"].reason
    assert hub.health["good"].state == HealthState.UP
    release.set()
    stuck = hub.stop(timeout=10)
    assert stuck == []
    assert not any(t.is_alive() for t in hub.scheduler.threads())
    store.close()
    stored = query(db_file, "SELECT DISTINCT s.name FROM samples p JOIN series s ON s.id=p.series_id")
    names = {row[0] for row in stored}
    assert "good_total" in names and "fine" in names and "bad" not in names
    assert query(db_file, "SELECT message FROM events WHERE source='raising'") == [("error: RuntimeError: boom",)]


def test_clean_records_rejects_garbage() -> None:
    records, rejected = clean_records([Sample("a", 1, 1.0), "x", Sample("b", float("inf"), 1.0)])
    samples = [r for r in records if isinstance(r, Sample)]
    assert samples == records and [s.name for s in samples] == ["a"] and isinstance(samples[0].value, float)
    assert rejected == 2
    assert clean_records(12) == ([], 1)
    assert clean_records(None) == ([], 0)


def test_backoff_grows_then_caps() -> None:
    c = Counting("c", interval=1.0)
    c.max_backoff = 30.0
    assert [backoff_delay(c, n) for n in range(8)] == [1, 1, 2, 4, 8, 16, 30, 30]


def test_down_source_flips_backs_off_and_recovers() -> None:
    hub = Hub(store=None)
    flaky = Flaky("flaky")
    events: list[Event] = []
    hub.subscribe(lambda records: events.extend(r for r in records if isinstance(r, Event)))
    hub.add_collectors([flaky])
    hub.start()
    wait_until(lambda: flaky.polls >= 3, what="polls while up")
    flaky.down.set()
    polls_at_down = flaky.polls
    wait_until(lambda: hub.health["flaky"].state == HealthState.DOWN, what="down state")
    assert flaky.polls - polls_at_down <= 2  # noticed within one interval
    assert hub.health["flaky"].reason == "connection refused"
    wait_until(lambda: flaky.polls >= polls_at_down + 6, what="polls while down")
    flaky.down.clear()
    wait_until(lambda: hub.health["flaky"].state == HealthState.UP, what="recovery")
    hub.stop()
    assert [e.kind for e in events] == ["source_down", "source_up"]
    assert hub.buffers.latest_value("llmmon_source_up", (("kind", "test"), ("source", "flaky"))) == 1.0


class Spawning(Counting):
    """Creates collectors as it polls, like discovery finding servers: ``child`` on its first
    poll, then ``twin`` (a second collector under the same name) on its second."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.child, self.twin = Counting("child"), Counting("child")
        self.twin.close = lambda: setattr(self.twin, "closed", True)  # type: ignore[method-assign]
        self._created: list[Collector] = []

    def poll(self) -> list[Record]:
        by_poll: dict[int, list[Collector]] = {1: [self.child], 2: [self.twin]}
        self._created = by_poll.get(self.polls + 1, [])
        return super().poll()

    def new_collectors(self) -> list[Collector]:
        created, self._created = self._created, []
        return created


def test_collectors_a_collector_creates_run_on_their_own_threads(caplog) -> None:
    hub = Hub(store=None)
    parent = Spawning("parent")
    hub.add_collectors([parent])
    hub.start()
    try:
        wait_until(lambda: parent.child.polls >= 3 and parent.polls >= 5, what="the created collector's polls")
        assert hub.health["child"].state == HealthState.UP
        assert [c.name for c in hub.scheduler.collectors] == ["parent", "child"]
        # the second "child" could not be scheduled: it was closed and said so; the parent polls on
        assert getattr(parent.twin, "closed", False) and parent.twin.polls == 0
        assert hub.scheduler.faults.counts() == {"cannot schedule a collector from parent": 1}
        assert "cannot schedule a collector from parent (child): ValueError" in caplog.text
        polls = parent.polls
        wait_until(lambda: parent.polls > polls + 2, what="the parent to keep polling")
    finally:
        assert hub.stop() == []
