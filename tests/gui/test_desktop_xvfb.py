"""llmmon as a user lives with it, on a real X desktop: Xvfb with a window manager (openbox), a
system tray (trayer) and a notification daemon (dunst on a D-Bus session bus). The app runs as
its own process and is driven like a user would: the title bar's close button (wmctrl -c), keys
(xdotool), a second launch from the menu. What is checked is what a user sees: windows on the
screen, the tray icon's pixels, the notifications dunst receives, rows in the database."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage

import main
from tests.sim.ollama import SimOllama
from tests.support import count, query, wait_until
from tests.support.xdesktop import XDesktop, x_desktop
from widgets.single_instance import server_name
from widgets.theme import GOOD, SEVERITY_COLOURS

ROOT = Path(__file__).resolve().parents[2]
TITLE = "llmmon"
REFUSED = "llmmon cannot open its database"  # the refusal dialog's title


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Every llmmon a test starts; killed at the end if the test did not end it."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def launch(processes: list[subprocess.Popen], desk: XDesktop, db: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--db", str(db), *args], cwd=ROOT,
                            env=desk.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(proc)
    return proc


def main_window(desk: XDesktop, proc: subprocess.Popen) -> str:
    wait_until(lambda: desk.windows(TITLE, proc.pid) or proc.poll() is not None, timeout=60,
               what="llmmon's window on the screen")
    assert proc.poll() is None, proc.stderr.read()
    return desk.windows(TITLE, proc.pid)[0]


def tray_pixels(desk: XDesktop, colour: str, tmp: Path) -> int:
    """Pixels of about ``colour`` in the tray (trayer's strip at the top right of the screen)."""
    image = QImage(str(desk.screenshot(tmp / "screen.png")))
    want = QColor(colour)
    hits = 0
    for x in range(image.width() - 120, image.width()):
        for y in range(0, 26):
            c = image.pixelColor(x, y)
            hits += abs(c.red() - want.red()) + abs(c.green() - want.green()) + abs(c.blue() - want.blue()) < 60
    return hits


def quit_with_ctrl_q(desk: XDesktop, proc: subprocess.Popen, window: str) -> None:
    desk.run("xdotool", "windowactivate", "--sync", str(int(window, 16)))
    desk.run("xdotool", "key", "--clearmodifiers", "ctrl+q")
    proc.wait(60)


def test_the_tray_icon_and_the_desktop_tell_when_a_server_goes_down(processes, tmp_path: Path, db_file: Path) -> None:
    config = Path(os.environ["LLMMON_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    (config.parent / "alert_rules.toml").write_text(
        '[[rule]]\nname = "server_down"\ntitle = "LLM server down"\nmetric = "llmmon_source_up"\n'
        'match = { kind = "ollama" }\nop = "<"\nthreshold = 1\nseverity = "critical"\n'
        'message = "{source} does not answer"\n', encoding="utf-8")
    with SimOllama() as sim, x_desktop(wm=True, tray=True, notifications=True) as desk:
        config.write_text(f'[general]\ndiscover_local = false\n[[servers]]\nurl = "{sim.url}"\nkind = "ollama"\n'
                          'name = "desk-ollama"\n', encoding="utf-8")
        monitor = subprocess.Popen(["dbus-monitor", "--address", desk.bus,
                                    "interface='org.freedesktop.Notifications',member='Notify'"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seen: list[str] = []
        threading.Thread(target=lambda: seen.extend(monitor.stdout), daemon=True).start()
        try:
            app = launch(processes, desk, db_file)
            window = main_window(desk, app)
            wait_until(lambda: tray_pixels(desk, GOOD, tmp_path) >= 10, timeout=30,
                       what="the tray icon with its green all-is-well dot")
            assert tray_pixels(desk, SEVERITY_COLOURS["critical"], tmp_path) == 0
            sim.go_down()
            wait_until(lambda: tray_pixels(desk, SEVERITY_COLOURS["critical"], tmp_path) >= 20, timeout=30,
                       what="the tray icon to turn critical")
            desk.screenshot(ROOT / "artifacts" / "screenshots" / "desktop_tray_alert.png")
            def fired() -> list[tuple]:
                return query(db_file, "SELECT message FROM alert_events WHERE state = 'firing'")

            wait_until(fired, timeout=30, what="the firing alert in the database (written within a second)")
            assert fired() == [("desk-ollama does not answer",)]
            wait_until(lambda: any("desk-ollama does not answer" in line for line in seen), timeout=30,
                       what="the notification on the session bus")
            assert any('"CRITICAL: LLM server down"' in line for line in seen)
            assert int(desk.run("dunstctl", "count", "displayed").stdout) >= 1  # dunst shows it
            quit_with_ctrl_q(desk, app, window)
        finally:
            monitor.terminate()
            monitor.wait(10)
    assert app.returncode == 0, app.stderr.read()


def test_close_to_tray_keeps_recording_a_second_launch_brings_it_back_and_ctrl_q_quits(
        processes, tmp_path: Path, db_file: Path) -> None:
    with x_desktop(wm=True, tray=True) as desk:
        app = launch(processes, desk, db_file)
        window = main_window(desk, app)
        # The X11 class and icon a task switcher shows.
        decimal = str(int(window, 16))
        assert decimal in desk.run("xdotool", "search", "--classname", "^llmmon$").stdout.split()
        assert decimal in desk.run("xdotool", "search", "--class", "^llmmon$").stdout.split()
        assert "Icon (64 x 64)" in desk.run("xprop", "-id", window, "_NET_WM_ICON").stdout

        desk.run("wmctrl", "-i", "-c", window)  # the title bar's close button
        wait_until(lambda: not desk.windows(TITLE, app.pid), timeout=60, what="the window to go to the tray")
        rows = count(db_file, "samples")
        wait_until(lambda: count(db_file, "samples") > rows + 10, timeout=30, what="recording to go on")
        assert app.poll() is None

        second = launch(processes, desk, db_file)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "already running for this database; brought its window to the front" in out
        window = main_window(desk, app)  # the first one got the message and came back
        assert query(db_file, "SELECT count(*) FROM sessions") == [(1,)]  # one recorder all along
        quit_with_ctrl_q(desk, app, window)
    assert app.returncode == 0, app.stderr.read()
    assert query(db_file, "SELECT ended IS NOT NULL FROM sessions") == [(1,)]
    assert query(db_file, "PRAGMA integrity_check") == [("ok",)]


def test_a_crashed_llmmon_does_not_block_the_next_start(processes, tmp_path: Path, db_file: Path) -> None:
    socket_file = Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / server_name(db_file)
    with x_desktop(wm=True, tray=True) as desk:
        crashed = launch(processes, desk, db_file)
        main_window(desk, crashed)
        assert socket_file.exists()
        crashed.kill()  # SIGKILL: nothing is cleaned up
        crashed.wait(30)
        assert socket_file.exists()

        app = launch(processes, desk, db_file)  # starts, though the dead one's socket is there
        window = main_window(desk, app)
        desk.run("wmctrl", "-i", "-c", window)
        wait_until(lambda: not desk.windows(TITLE, app.pid), timeout=60, what="the window to go to the tray")
        again = launch(processes, desk, db_file)
        assert again.wait(60) == 0, again.stderr.read()  # and it answers on that socket's name
        window = main_window(desk, app)
        quit_with_ctrl_q(desk, app, window)
    assert app.returncode == 0
    assert query(db_file, "SELECT count(*) FROM sessions") == [(2,)]  # the crashed run's and the next one's


def test_without_a_tray_closing_the_window_asks_then_quits(processes, db_file: Path) -> None:
    with x_desktop("1024x640", wm=True) as desk:  # a small screen: the first window fits on it
        app = launch(processes, desk, db_file)
        window = main_window(desk, app)
        size = desk.run("xdotool", "getwindowgeometry", str(int(window, 16))).stdout
        width, height = map(int, size.split("Geometry: ")[1].split()[0].split("x"))
        assert width <= 1024 and height <= 640 - 20, size  # 20: openbox's title bar
        desk.run("wmctrl", "-i", "-c", window)
        wait_until(lambda: desk.windows("Quit llmmon?", app.pid), timeout=30, what="the question")
        dialog = desk.windows("Quit llmmon?", app.pid)[0]
        desk.run("xdotool", "windowactivate", "--sync", str(int(dialog, 16)))
        desk.run("xdotool", "key", "Return")  # the default button: Close
        assert app.wait(60) == 0, app.stderr.read()
    assert query(db_file, "SELECT ended IS NOT NULL FROM sessions") == [(1,)]


def test_a_window_on_a_database_a_headless_recorder_holds_is_refused(processes, db_file: Path) -> None:
    headless = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db_file)],
                                cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": ""}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    processes.append(headless)
    assert "recording to" in headless.stdout.readline()
    with x_desktop(wm=True) as desk:
        app = launch(processes, desk, db_file)
        wait_until(lambda: desk.windows(REFUSED, app.pid), timeout=60, what="the refusal dialog")
        dialog = desk.windows(REFUSED, app.pid)[0]
        desk.run("xdotool", "windowactivate", "--sync", str(int(dialog, 16)))
        desk.run("xdotool", "key", "Return")
        assert app.wait(60) == main.EXIT_REFUSED
    assert f"{db_file}: a headless llmmon recorder (pid {headless.pid}, since " in app.stderr.read()
    assert headless.poll() is None
