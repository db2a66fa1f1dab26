"""End to end: the simulated Ollama goes down → the shipped "server down" rule fires once after
30 s of fake time → one tray balloon and one webhook POST to a real HTTP receiver → resolved
when the server is back. The webhook URL ends up in no database, config file or log record."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import shiboken6

from app import secrets
from app.alerts.notify import WEBHOOK_SECRET
from app.alerts.rule_file import set_notify_option
from app.alerts.rules import ensure_user_rules
from app.hub import Hub
from app.records import labels_of
from app.runtime import build_alert_engine
from app.storage.store import Store
from collectors.ollama import OllamaCollector
from tests.sim.ollama import SimOllama
from tests.support import query, wait_until
from tests.support.clock import FakeClock
from widgets.tray import AlertTray, TraySink


def test_server_down_fires_once_notifies_once_and_resolves(qtbot, db_file: Path, memory_keyring, webhook_receiver,
                                                           caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    # The app keeps httpx at WARNING (app/logs.py); opened up here so the scrubbing of its request
    # lines is checked whichever test set up logging first.
    caplog.set_level(logging.DEBUG, logger="httpx")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)  # no desktop daemon: the tray is used
    token = uuid.uuid4().hex
    secrets.set_secret(WEBHOOK_SECRET, webhook_receiver.url(f"/hooks/{token}"))
    rules = ensure_user_rules()  # the shipped defaults, with the webhook switched on
    rules.write_text(set_notify_option(rules.read_text(), "webhook", '"json"'))

    clock = FakeClock(1_750_000_000.0)
    sim = SimOllama().start()
    store = Store(db_file, clock=clock)
    store.start()
    hub = Hub(store, clock=clock)
    collector = OllamaCollector(sim.url, interval=0.02, clock=clock)
    collector.max_backoff = 0.02  # real seconds between polls; the timestamps are fake
    hub.add_collectors([collector])
    engine = build_alert_engine(hub)
    tray = AlertTray(engine)
    engine.notifier.add_sink(TraySink(tray, available=lambda: True))  # offscreen Qt has no tray
    engine.notifier.start()
    up = ("llmmon_source_up", labels_of(source=collector.name, kind="ollama"))

    def poll_at(t: float, value: float | None = None) -> None:
        """Move fake time to ``t`` and wait for the collector to report from there."""
        clock.t = t
        wait_until(lambda: (p := hub.buffers.latest(up)) is not None and p[0] >= t
                   and (value is None or p[1] == value), what=f"a poll at t={t - start:+.0f}")

    def server_down() -> list[str]:
        return [tr.event.state for tr in engine.evaluate() if tr.event.rule == "server_down"]

    hub.start()
    try:
        start = clock.t
        poll_at(start, 1.0)
        assert server_down() == []
        sim.go_down()
        poll_at(start + 1, 0.0)
        states = {}
        for second in range(1, 61):
            poll_at(start + second)
            for state in server_down():
                states[second] = state
        assert states == {1: "pending", 31: "firing"}  # exactly 30 s of fake time after it went down
        qtbot.waitUntil(lambda: tray.messages_shown == 1 and len(webhook_receiver.received) == 1, timeout=10_000)
        for second in range(65, 180, 5):  # still down for two more minutes: nothing new
            poll_at(start + second)
            assert server_down() == []
        assert tray.messages_shown == 1 and len(webhook_receiver.received) == 1
        post = webhook_receiver.received[0]
        assert post.path == f"/hooks/{token}"
        assert post.body["title"] == "CRITICAL: LLM server down"
        assert post.body["alerts"][0]["labels"] == {"kind": "ollama", "source": collector.name}
        port = collector.name.rsplit(":", 1)[1]
        assert post.body["text"] == (f"Ollama on :{port} has not answered for 30 s\n"
                                     "Check that the server is still running (its window or log) and start it "
                                     "again; the alert resolves by itself when it answers.")

        sim.come_back()
        poll_at(start + 180, 1.0)
        assert server_down() == ["resolved"]
        qtbot.waitUntil(lambda: tray.messages_shown == 2 and len(webhook_receiver.received) == 2, timeout=10_000)
        assert webhook_receiver.received[1].body["title"] == "Resolved: LLM server down"
        assert engine.alerts() == []
    finally:
        engine.notifier.stop()
        shiboken6.delete(tray)  # it sits in a reference cycle: not up to the garbage collector
        hub.stop()
        sim.stop()
        store.close()
    assert [d.delivered for d in engine.notifier.deliveries] == [("tray", "webhook"), ("tray", "webhook")]
    rows = query(db_file, "SELECT state, ts FROM alert_events WHERE rule='server_down' ORDER BY id")
    assert [(state, ts - start) for state, ts in rows] == [("pending", 1), ("firing", 31), ("resolved", 180)]

    # The secret is in the keyring only: not in the database, the config dir, or any log record.
    stored = [p for p in db_file.parent.glob(db_file.name + "*")] + list(rules.parent.rglob("*"))
    assert all(token.encode() not in p.read_bytes() for p in stored if p.is_file())
    assert all(token not in r.getMessage() for r in caplog.records)
    assert any("<webhook URL>" in r.getMessage() for r in caplog.records)  # httpx logged the POST, scrubbed
