"""A real X desktop for tests and benchmarks: Xvfb, and on request a window manager (openbox, so
windows get a title bar and a close button), a system tray (trayer) and a D-Bus session bus with
a notification daemon (dunst). Every process it starts is stopped on exit, by its own id.

    with x_desktop(wm=True, tray=True, notifications=True) as desk:
        subprocess.Popen([...], env=desk.env)   # DISPLAY and DBUS_SESSION_BUS_ADDRESS set
        desk.screenshot(path)

Needs the Debian packages xvfb, openbox, trayer, dbus, dunst, xdotool, wmctrl, imagemagick
(all in ``scripts/system-deps``).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import wait_until


@dataclass
class XDesktop:
    display: str
    env: dict[str, str]
    bus: str | None = None  # the D-Bus session address when notifications were asked for
    _procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
        """Run an X client (xdotool, wmctrl...) on this display; its output as text."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def windows(self, title: str, pid: int | None = None) -> list[str]:
        """Ids (hex) of the shown windows the window manager manages whose title is ``title``,
        optionally of one process. Hidden windows, tray icons and popups are not among them.
        Needs ``wm=True``."""
        found = []
        for line in self.run("wmctrl", "-l", "-p").stdout.splitlines():
            window, _desktop, owner, _host, *words = line.split(maxsplit=4) + [""]
            if " ".join(words).strip() == title and (pid is None or owner == str(pid)):
                found.append(window)
        return found

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.run("import", "-window", "root", str(path), timeout=30).check_returncode()
        return path


def _start(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)


def _start_xvfb(size: str) -> tuple[subprocess.Popen, str]:
    """Xvfb on a random free display number: the lowest free one (what -displayfd alone picks)
    is the one every other X server started on this shared machine goes for too."""
    for _ in range(20):
        display = f":{random.randrange(200, 30000)}"
        xvfb = subprocess.Popen(["Xvfb", display, "-displayfd", "1", "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        if xvfb.stdout.readline().strip():  # written once it is ready; nothing when the number is taken
            return xvfb, display
        xvfb.wait(10)
    raise AssertionError("no free X display number for Xvfb")


def _start_window_manager(desk: XDesktop, attempts: int = 3) -> None:
    """openbox, started again when it ends at once (seen now and then on this shared machine:
    "Failed to open the display" on a display other clients reach, or a silent exit)."""
    for _ in range(attempts):
        openbox = _start(["openbox", "--sm-disable"], desk.env)
        desk._procs.append(openbox)

        def managing_or_gone(wm: subprocess.Popen = openbox) -> bool:
            return desk.run("wmctrl", "-m").returncode == 0 or wm.poll() is not None

        wait_until(managing_or_gone, what="openbox to manage the screen")
        if openbox.poll() is None:
            return
    raise AssertionError(f"openbox did not start on {desk.display}")


@contextmanager
def x_desktop(size: str = "1600x1000", wm: bool = False, tray: bool = False,
              notifications: bool = False) -> Iterator[XDesktop]:
    xvfb, display = _start_xvfb(size)
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    desk = XDesktop(display, env, _procs=[xvfb])
    try:
        wait_until(lambda: desk.run("xdotool", "getdisplaygeometry").returncode == 0, what=f"Xvfb on {display}")
        if notifications:
            session = subprocess.Popen(
                ["dbus-run-session", "--", "sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"; exec dunst'],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
            desk._procs.append(session)
            desk.bus = env["DBUS_SESSION_BUS_ADDRESS"] = session.stdout.readline().decode().strip()
            from app.alerts.notify import DesktopSink

            sink = DesktopSink(desk.bus, recheck_s=0)
            wait_until(lambda: sink.status()[0], what="dunst to own org.freedesktop.Notifications")
        if wm:
            _start_window_manager(desk)
        if tray:
            desk._procs.append(_start(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                                       "--height", "24", "--transparent", "false", "--tint", "0x404040"], env))
            wait_until(lambda: desk.run("xdotool", "search", "--classname", "trayer").stdout.strip(),
                       what="trayer's tray window")
        yield desk
    finally:
        for proc in reversed(desk._procs):  # each was started in its own process group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
