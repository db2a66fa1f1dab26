"""Alert state survives a restart: the app's engine (``app.runtime.build_alert_engine``, the shipped rules)
fires and notifies, llmmon stops, and a new store, hub and engine on the same SQLite file take
up where it was — no second notification for an alert still firing, a resolution (and no
"firing" notification) for one that ended while llmmon was down."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.alerts.notify import Notification
from app.alerts.rules import DEFAULT_RULES_PATH
from app.hub import Hub
from app.records import Sample, labels_of
from app.runtime import build_alert_engine
from app.storage.store import Store
from tests.support import query
from tests.support.clock import FakeClock

GPU0 = labels_of(gpu="0")


class Run:
    """One run of llmmon's alerting: a store, a hub and the app's engine on ``db``."""

    def __init__(self, db: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.store = Store(db, clock=clock)
        self.store.start()
        self.hub = Hub(self.store, clock=clock)
        self.engine = build_alert_engine(self.hub, DEFAULT_RULES_PATH)

    @property
    def sent(self) -> list[Notification]:
        assert self.engine.notifier is not None
        return list(self.engine.notifier.sent)

    def gpu(self, celsius: float, seconds: int) -> list[str]:
        """The GPU at ``celsius`` for ``seconds``, evaluated every 10 s; the gpu_hot transitions."""
        states = []
        for _ in range(0, seconds, 10):
            self.hub.publish([Sample("gpu_temperature_celsius", celsius, self.clock.t, GPU0)])
            states += [t.event.state for t in self.engine.evaluate() if t.event.rule == "gpu_hot"]
            self.clock.advance(10)
        return states

    def stop(self) -> None:
        self.store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def first(db_file: Path, clock: FakeClock) -> Iterator[Run]:
    run = Run(db_file, clock)
    yield run
    run.stop()


def gpu_hot_states(db: Path) -> list[str]:
    return [state for (state,) in query(db, "SELECT state FROM alert_events WHERE rule='gpu_hot' ORDER BY id")]


def test_an_alert_firing_before_a_restart_is_not_notified_again(first: Run, db_file: Path, clock: FakeClock) -> None:
    assert first.gpu(91.0, 120) == ["pending", "firing"]
    assert [n.title for n in first.sent] == ["CRITICAL: GPU too hot"]
    first.stop()
    clock.advance(300)                                   # five minutes without llmmon

    second = Run(db_file, clock)
    try:
        assert second.gpu(92.0, 600) == []                   # still firing: no transition at all
        assert second.sent == []                             # and no notification
        [alert] = second.engine.alerts()
        assert (alert.rule, alert.state) == ("gpu_hot", "firing")
        assert second.engine.worst_firing() == ("critical", 1)
        assert alert.message.startswith("GPU 0 is at 92 °C, above 85 °C, for ")
    finally:
        second.stop()
    assert gpu_hot_states(db_file) == ["pending", "firing"]


def test_an_alert_that_ended_while_llmmon_was_down_resolves_without_a_firing_notification(
        first: Run, db_file: Path, clock: FakeClock) -> None:
    first.gpu(91.0, 120)
    first.stop()
    clock.advance(600)

    second = Run(db_file, clock)
    try:
        assert second.engine.alerts()[0].state == "firing"   # taken up, before any data
        assert second.engine.evaluate() == []                # no data yet: it waits for the collectors
        assert second.gpu(60.0, 30) == ["resolved"]
        assert [(n.title, n.body) for n in second.sent] == [
            ("Resolved: GPU too hot", "GPU 0 temperature is back to 60 °C")]
        assert second.engine.alerts() == []
        # Hot again 10 minutes after it fired, inside its 15-minute cooldown: shown, not announced.
        assert second.gpu(95.0, 70) == ["pending", "firing"]
        assert len(second.sent) == 1
    finally:
        second.stop()
    assert gpu_hot_states(db_file) == ["pending", "firing", "resolved", "pending", "firing"]


def test_a_restored_alert_whose_series_never_comes_back_resolves_after_the_grace(
        first: Run, db_file: Path, clock: FakeClock) -> None:
    first.gpu(91.0, 120)
    first.stop()

    second = Run(db_file, clock)
    try:
        states = []
        for _ in range(13):                                  # two minutes without the GPU's series
            states += [t.event.state for t in second.engine.evaluate()]
            clock.advance(10)
        assert states == ["resolved"]
        assert [n.title for n in second.sent] == ["Resolved: GPU too hot"]
    finally:
        second.stop()
