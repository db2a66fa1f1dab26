"""Notifications: grouping and cooldown make storms impossible, local sinks fall back, the
webhook reaches a real HTTP receiver while its URL stays out of the logs, and the keyring is
the only place a secret is kept."""
from __future__ import annotations

import itertools
import logging
import uuid
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from app import secrets
from app.alerts.engine import AlertEngine
from app.alerts.notify import WEBHOOK_SECRET, DesktopSink, Notification, Notifier, Sink, WebhookSink
from app.alerts.rules import NotifySettings, Rule
from app.buffers import LiveBuffers
from app.records import Sample, labels_of
from tests.support import wait_until


class RecordingSink(Sink):
    """Stands in for the tray: says it is there and remembers what it was asked to show."""

    def __init__(self, kind: str, available: bool = True) -> None:
        self.kind = kind
        self.available = available
        self.shown: list[Notification] = []

    def status(self) -> tuple[bool, str]:
        return self.available, self.kind

    def send(self, notification: Notification) -> bool:
        if self.available:
            self.shown.append(notification)
        return self.available


def storm_engine(n_rules: int) -> tuple[AlertEngine, LiveBuffers]:
    """Many rules on many GPUs, all with the same flapping metric."""
    buffers = LiveBuffers()
    rules = [Rule(f"r{i}", "gpu_temperature_celsius", ">", 50.0 + i, cooldown=300, severity="critical")
             for i in range(n_rules)]
    return AlertEngine(buffers, rules), buffers


def test_a_storm_of_transitions_gives_few_grouped_notifications() -> None:
    engine, buffers = storm_engine(20)
    notifier = Notifier([], NotifySettings(group_seconds=10))
    engine.add_listener(notifier.submit)
    t0 = 1000.0
    # 10 minutes; every 5 s the temperature of 4 GPUs swings between 40 and 90 °C.
    for step in range(121):
        now = t0 + 5 * step
        buffers.add(Sample("gpu_temperature_celsius", 90.0 if step % 2 == 0 else 40.0, now, labels_of(gpu=str(g)))
                    for g in range(4))
        engine.evaluate(now)
    sent = list(notifier.sent)
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(sent)]
    assert all(gap >= 10 for gap in gaps)  # never more than one per group interval
    # 80 alerts fire at t0, t0+300 (cooldown) and t0+600: three bursts, each one message or two.
    assert len(sent) <= 6
    first = sent[0]
    assert first.title == "llmmon alerts: 80 firing" and first.severity == "critical"
    assert len(first.body.splitlines()) == 8 and first.body.endswith("… and 73 more")
    firing = sum(n.firing for n in sent)
    assert firing == 80 * 3


def test_pending_and_snoozed_alerts_are_not_announced() -> None:
    buffers = LiveBuffers()
    engine = AlertEngine(buffers, [Rule("hot", "gpu_temperature_celsius", ">", 85.0, for_s=60)])
    notifier = Notifier([], NotifySettings(group_seconds=0))
    engine.add_listener(notifier.submit)
    buffers.add([Sample("gpu_temperature_celsius", 90.0, 0.0, labels_of(gpu="0"))])
    engine.evaluate(0.0)
    assert list(notifier.sent) == []  # pending only
    buffers.add([Sample("gpu_temperature_celsius", 90.0, 60.0, labels_of(gpu="0"))])
    engine.evaluate(60.0)
    assert [n.title for n in notifier.sent] == ["WARNING: hot"]
    engine.clock = lambda: 61.0
    engine.snooze("hot", labels_of(gpu="0"), 600)
    buffers.add([Sample("gpu_temperature_celsius", 20.0, 70.0, labels_of(gpu="0"))])
    engine.evaluate(70.0)
    assert len(notifier.sent) == 1  # resolved while snoozed: silent


def test_desktop_falls_back_to_the_tray_when_there_is_no_notification_daemon() -> None:
    desktop = DesktopSink("unix:path=/nonexistent/llmmon-test-bus", timeout=0.5)
    available, why = desktop.status()
    assert not available and "no D-Bus session bus" in why
    tray, webhook = RecordingSink("tray"), RecordingSink("webhook")
    notifier = Notifier([desktop, tray, webhook], NotifySettings(webhook="json"))
    n = Notification("CRITICAL: LLM server down", "ollama@127.0.0.1:11434 is down", "critical", (), 0.0)
    notifier.deliver(n)
    wait_until(lambda: notifier.deliveries, what="the webhook lane's answer")
    delivery = notifier.deliveries[0]
    assert delivery.delivered == ("tray", "webhook") and delivery.failed == ("desktop",)
    assert tray.shown == [n]
    notifier.configure(NotifySettings(tray=False, webhook="off"))
    notifier.deliver(n)
    assert notifier.deliveries[-1].delivered == ()  # switched off in the rule file
    notifier.stop()


def test_webhook_posts_json_and_slack_to_a_real_receiver(memory_keyring, webhook_receiver) -> None:
    token = uuid.uuid4().hex
    url = webhook_receiver.url(f"/hooks/T000/{token}")
    secrets.set_secret(WEBHOOK_SECRET, url)
    sink = WebhookSink("json")
    assert sink.status() == (True, "webhook (json) set in the keyring")
    buffers = LiveBuffers()
    engine = AlertEngine(buffers, [Rule("hot", "gpu_temperature_celsius", ">", 85.0, severity="critical",
                                        message="GPU {gpu} at {value:.0f} °C")])
    notifier = Notifier([sink], NotifySettings(webhook="json"))
    notifier.start()
    engine.add_listener(notifier.submit)
    buffers.add([Sample("gpu_temperature_celsius", 91.0, 5.0, labels_of(gpu="1"))])
    engine.evaluate(5.0)
    wait_until(lambda: webhook_receiver.received, what="the webhook POST")
    got = webhook_receiver.received[0]
    assert got.path == f"/hooks/T000/{token}"
    assert got.content_type == "application/json"
    assert got.body["title"] == "CRITICAL: hot" and got.body["severity"] == "critical"
    assert got.body["alerts"] == [{"rule": "hot", "state": "firing", "severity": "critical", "ts": 5.0,
                                   "labels": {"gpu": "1"}, "value": 91.0, "message": "GPU 1 at 91 °C"}]
    notifier.configure(NotifySettings(webhook="slack"))
    buffers.add([Sample("gpu_temperature_celsius", 40.0, 30.0, labels_of(gpu="1"))])
    engine.evaluate(30.0)
    wait_until(lambda: len(webhook_receiver.received) == 2, what="the second POST")
    assert webhook_receiver.received[1].body == {"text": "*Resolved: hot*\nGPU 1 temperature is back to 40 °C"}
    notifier.stop()
    assert [d.delivered for d in notifier.deliveries] == [("webhook",), ("webhook",)]


def test_the_webhook_url_never_reaches_a_log_record(memory_keyring, webhook_receiver, caplog) -> None:
    token = uuid.uuid4().hex
    url = webhook_receiver.url(f"/services/{token}")
    secrets.set_secret(WEBHOOK_SECRET, url)
    caplog.set_level(logging.DEBUG)
    sink = WebhookSink("slack")
    n = Notification("t", "b", "info", (), 0.0)
    assert sink.send(n)
    webhook_receiver.status = 500
    assert not sink.send(n)
    webhook_receiver.server.shutdown()
    webhook_receiver.server.server_close()
    assert not sink.send(n)  # refused
    secrets.set_secret(WEBHOOK_SECRET, f"htp:/{token}")
    assert not sink.send(n)  # invalid URL
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert "<webhook URL>" in text  # httpx did log the request, with the URL scrubbed
    assert "webhook answered HTTP 500" in text and "webhook failed: ConnectError" in text


def test_without_a_secure_keyring_secrets_are_refused_not_written_to_files(tmp_path: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        available, why = secrets.keyring_status()
        assert not available and why.startswith("no secure keyring available")
        with pytest.raises(secrets.KeyringUnavailable):
            secrets.set_secret(WEBHOOK_SECRET, "https://hooks.example/secret-token")
        assert secrets.get_secret(WEBHOOK_SECRET) is None
        assert WebhookSink().status() == (False, why)
    finally:
        keyring.set_keyring(previous)
    home = Path(tmp_path).parent
    leaked = [p for p in home.rglob("*") if p.is_file() and b"secret-token" in p.read_bytes()]
    assert leaked == []


def test_the_memory_keyring_round_trip(memory_keyring) -> None:
    available, name = secrets.keyring_status()
    assert available and "MemoryKeyring" in name
    secrets.set_secret("api_key", "k")
    assert secrets.get_secret("api_key") == "k"
    secrets.delete_secret("api_key")
    secrets.delete_secret("api_key")  # deleting twice is fine
    assert secrets.get_secret("api_key") is None


class GpuFire:
    """GPUs overheating one after another: each ``next()`` fires one more alert, and with
    ``group_seconds = 0`` each becomes one notification."""

    def __init__(self, notifier: Notifier) -> None:
        self.buffers = LiveBuffers()
        self.engine = AlertEngine(self.buffers, [Rule("hot", "gpu_temperature_celsius", ">", 85.0,
                                                      severity="critical")])
        self.engine.add_listener(notifier.submit)
        self.gpu = 0

    def next(self, n: int = 1) -> None:
        for _ in range(n):
            t = float(self.gpu)
            self.buffers.add([Sample("gpu_temperature_celsius", 95.0, t, labels_of(gpu=str(self.gpu)))])
            assert [tr.event.state for tr in self.engine.evaluate(t)] == ["firing"]
            self.gpu += 1


def stuck_webhook(receiver, timeout: float) -> WebhookSink:
    receiver.trickle = 0.05  # a byte every 50 ms: no read ever waits long, the answer never ends
    secrets.set_secret(WEBHOOK_SECRET, receiver.url("/hook"))
    return WebhookSink("json", timeout=timeout)


def test_a_trickling_webhook_never_holds_up_the_tray(memory_keyring, webhook_receiver) -> None:
    tray = RecordingSink("tray")
    notifier = Notifier([tray, stuck_webhook(webhook_receiver, timeout=60)],
                        NotifySettings(group_seconds=0, webhook="json"))
    notifier.start()
    try:
        GpuFire(notifier).next(9)
        wait_until(lambda: len(tray.shown) == 9, what="all nine alerts in the tray")
        wait_until(lambda: webhook_receiver.received, what="the first webhook POST")
        # Meanwhile the webhook is still stuck in its first answer, the other eight queued.
        assert len(webhook_receiver.received) == 1 and list(notifier.deliveries) == []
        assert [n.title for n in tray.shown] == ["CRITICAL: hot"] * 9
    finally:
        webhook_receiver.release()
        notifier.stop()


def test_a_webhook_delivery_ends_at_its_deadline_with_a_logged_error(memory_keyring, webhook_receiver,
                                                                      caplog) -> None:
    tray = RecordingSink("tray")
    notifier = Notifier([tray, stuck_webhook(webhook_receiver, timeout=0.3)],
                        NotifySettings(group_seconds=0, webhook="json"))
    notifier.start()
    try:
        GpuFire(notifier).next(2)
        wait_until(lambda: len(notifier.deliveries) == 2, what="both webhook deliveries to end")
    finally:
        notifier.stop()
    assert [(d.delivered, d.failed) for d in notifier.deliveries] == [(("tray",), ("webhook",))] * 2
    assert len(webhook_receiver.received) == 2  # each POST went out, and each was cut off in time
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("webhook failed")]
    assert failures == ["webhook failed: no complete answer within its 0.3 s deadline"] * 2


def test_a_webhook_too_far_behind_drops_its_oldest_notifications(memory_keyring, webhook_receiver, caplog) -> None:
    tray = RecordingSink("tray")
    webhook = stuck_webhook(webhook_receiver, timeout=60)
    notifier = Notifier([tray, webhook], NotifySettings(group_seconds=0, webhook="json"), remote_queue=2)
    notifier.start()
    fire = GpuFire(notifier)
    try:
        fire.next()
        wait_until(lambda: webhook_receiver.received, what="the first POST, now stuck")
        fire.next(5)  # two may wait behind it: three are dropped, oldest first
        wait_until(lambda: notifier.dropped(webhook) == 3, what="three dropped")
        assert len(tray.shown) == 6
    finally:
        webhook_receiver.release()
        notifier.stop()
    drops = [r.getMessage() for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert drops == [f"webhook sink: 2 notifications waiting, dropped the oldest ('CRITICAL: hot'); {n} dropped so far"
                     for n in (1, 2, 3)]
    assert len(notifier.deliveries) == 6 and all(d.delivered == ("tray",) for d in notifier.deliveries)
    gpus = [d.notification.events[0].labels for d in notifier.deliveries][:3]
    assert gpus == [labels_of(gpu=str(g)) for g in (1, 2, 3)]  # the dropped ones, recorded as failed


class BrokenSink(RecordingSink):
    """A desktop sink whose library raises something nobody expected."""

    def send(self, notification: Notification) -> bool:
        raise RuntimeError("D-Bus library bug")


def test_a_sink_that_raises_is_logged_once_and_the_next_sink_takes_over(caplog) -> None:
    tray = RecordingSink("tray")
    notifier = Notifier([BrokenSink("desktop"), tray], NotifySettings(group_seconds=0))
    notifier.start()
    try:
        GpuFire(notifier).next(3)
        wait_until(lambda: len(notifier.deliveries) == 3, what="three deliveries")
        assert notifier._thread is not None and notifier._thread.is_alive()
    finally:
        notifier.stop()
    assert [(d.delivered, d.failed) for d in notifier.deliveries] == [(("tray",), ("desktop",))] * 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "notification sink desktop failed: RuntimeError: D-Bus library bug (logged once for this kind of error)"]
    assert errors[0].exc_info is not None
