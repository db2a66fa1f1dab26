"""A real desktop notification: Xvfb, a D-Bus session (``dbus-run-session``) and the ``dunst``
notification daemon are started for the test, and the notification must arrive there."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

from app.alerts.engine import AlertEngine
from app.alerts.notify import DesktopSink, Notifier
from app.alerts.rules import NotifySettings, Rule
from app.buffers import LiveBuffers
from app.records import Sample, labels_of
from tests.support import wait_until


@pytest.fixture
def notification_daemon() -> Iterator[str]:
    """The address of a fresh D-Bus session bus with dunst on a fresh Xvfb display."""
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    display = ":" + xvfb.stdout.readline().decode().strip()  # Xvfb picks a free display
    env = {**os.environ, "DISPLAY": display}
    session = subprocess.Popen(
        ["dbus-run-session", "--", "sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"; exec dunst'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    address = session.stdout.readline().decode().strip()
    try:
        yield address
    finally:
        os.killpg(session.pid, signal.SIGTERM)  # the group this fixture started: bus + dunst
        session.wait(10)
        xvfb.terminate()
        xvfb.wait(10)


def bus_env(address: str) -> dict[str, str]:
    return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}


def test_a_firing_alert_reaches_the_desktop_notification_daemon(notification_daemon: str) -> None:
    desktop = DesktopSink(notification_daemon, recheck_s=0)
    wait_until(lambda: desktop.status()[0], what="dunst to own org.freedesktop.Notifications")
    assert desktop.status() == (True, "desktop notifications via dunst")
    monitor = subprocess.Popen(["dbus-monitor", "--address", notification_daemon,
                                "interface='org.freedesktop.Notifications',member='Notify'"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(monitor.stdout), daemon=True)
    reader.start()
    try:
        # dbus-monitor prints its own NameAcquired signal once it listens.
        wait_until(lambda: any("NameAcquired" in line for line in seen), what="dbus-monitor to listen")
        buffers = LiveBuffers()
        engine = AlertEngine(buffers, [Rule("server_down", "llmmon_source_up", "<", 1.0, severity="critical",
                                            title="LLM server down", message="{source} is down")])
        notifier = Notifier([desktop], NotifySettings())
        engine.add_listener(notifier.submit)
        notifier.start()
        buffers.add([Sample("llmmon_source_up", 0.0, 10.0, labels_of(source="ollama@127.0.0.1:11434", kind="ollama"))])
        engine.evaluate(10.0)
        notifier.stop()
        assert notifier.deliveries[0].delivered == ("desktop",)
        wait_until(lambda: any("Ollama on :11434 is down" in line for line in seen),
                   what="the Notify call on the bus")
        assert any('"CRITICAL: LLM server down"' in line for line in seen)
        count = subprocess.run(["dunstctl", "count", "displayed"], env=bus_env(notification_daemon),
                               capture_output=True, text=True, timeout=10)
        assert count.stdout.strip() == "1"  # dunst shows it
    finally:
        monitor.terminate()
        monitor.wait(10)


def test_a_bus_without_a_notification_daemon_makes_the_sink_unavailable() -> None:
    session = subprocess.Popen(["dbus-run-session", "--", "sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"; exec cat'],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        address = session.stdout.readline().decode().strip()
        assert DesktopSink(address).status() == (False, "no notification daemon is running on the D-Bus session bus")
    finally:
        session.stdin.close()  # cat ends, and dbus-run-session with it
        session.wait(10)
