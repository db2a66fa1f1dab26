"""Removing and waking one collector (the settings window's Save): the removed one is polled no
more, closed, and leaves no health behind; the others go on; a woken one polls at once."""
from __future__ import annotations

import threading

from app.collector import Collector
from app.hub import Hub
from app.records import Record, Sample
from tests.support import wait_until


class Counting(Collector):
    kind = "test"

    def __init__(self, name: str, interval: float) -> None:
        self.name, self.interval, self.polls, self.closed = name, interval, 0, False

    def poll(self) -> list[Record]:
        self.polls += 1
        return [Sample("polls_total", float(self.polls), 1000.0 + self.polls)]

    def close(self) -> None:
        self.closed = True


def test_a_removed_collector_stops_is_closed_and_forgotten_while_the_others_go_on() -> None:
    hub = Hub(None)
    gone, kept = Counting("gone", 0.01), Counting("kept", 0.01)
    hub.add_collectors([gone, kept])
    hub.start()
    try:
        wait_until(lambda: gone.polls > 2 and "gone" in hub.health, what="both polling")
        hub.remove_source("gone")
        wait_until(lambda: gone.closed, what="the removed collector closed")
        polls = gone.polls
        kept_polls = kept.polls
        wait_until(lambda: kept.polls > kept_polls + 5, what="the other one polling on")
        assert gone.polls == polls and "gone" not in hub.health
        assert [c.name for c in hub.scheduler.collectors] == ["kept"]
        hub.scheduler.add(Counting("gone", 0.01))  # the same name can come back (an edited server)
        wait_until(lambda: "gone" in hub.health, what="the re-added collector polling")
    finally:
        hub.stop()


def test_wake_polls_at_once_instead_of_at_the_next_interval() -> None:
    hub = Hub(None)
    slow = Counting("slow", 3600.0)
    polled = threading.Event()
    hub.subscribe(lambda records: polled.set() if slow.polls >= 2 else None)
    hub.add_collectors([slow])
    hub.start()
    try:
        wait_until(lambda: slow.polls == 1, what="the first poll")
        hub.scheduler.wake("slow")
        assert polled.wait(10), "a woken collector polls within seconds, not in an hour"
    finally:
        hub.stop()
