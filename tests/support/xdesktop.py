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

import ctypes
import os
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

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
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


def selection_owned(display: str, selection: str) -> bool:
    """Whether an X client owns ``selection`` (a tray owns _NET_SYSTEM_TRAY_S0 once it takes icons;
    its window exists a moment before that), asked through Xlib."""
    x11 = ctypes.cdll.LoadLibrary("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XGetSelectionOwner.restype = ctypes.c_ulong
    x11.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = x11.XOpenDisplay(display.encode())
    if not connection:
        return False
    try:
        return bool(x11.XGetSelectionOwner(connection, x11.XInternAtom(connection, selection.encode(), 0)))
    finally:
        x11.XCloseDisplay(connection)


def _start(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)


def _start_xvfb(size: str) -> tuple[subprocess.Popen, str]:
    # -noreset: the server would otherwise reset whenever its last client leaves (our short-lived
    # xdotool/wmctrl calls), and a client connecting during a reset fails to open the display.
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    return xvfb, ":" + xvfb.stdout.readline().decode().strip()  # Xvfb picks a free display, then says which


def _start_window_manager(desk: XDesktop) -> None:
    openbox = _start(["openbox", "--sm-disable"], desk.env)
    desk._procs.append(openbox)
    wait_until(lambda: desk.run("wmctrl", "-m").returncode == 0 or openbox.poll() is not None, timeout=30,
               what="openbox to manage the screen")
    if openbox.poll() is not None:
        raise AssertionError(f"openbox ended at once on {desk.display} (exit status {openbox.returncode})")


@contextmanager
def x_desktop(size: str = "1600x1000", wm: bool = False, tray: bool = False,
              notifications: bool = False) -> Iterator[XDesktop]:
    xvfb, display = _start_xvfb(size)
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    desk = XDesktop(display, env, _procs=[xvfb])
    try:
        wait_until(lambda: desk.run("xdotool", "getdisplaygeometry").returncode == 0, timeout=30,
                   what=f"Xvfb on {display}")
        if notifications:
            session = subprocess.Popen(
                ["dbus-run-session", "--", "sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"; exec dunst'],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
            desk._procs.append(session)
            desk.bus = env["DBUS_SESSION_BUS_ADDRESS"] = session.stdout.readline().decode().strip()
            from app.alerts.notify import DesktopSink

            sink = DesktopSink(desk.bus, recheck_s=0)
            wait_until(lambda: sink.status()[0], timeout=30, what="dunst to own org.freedesktop.Notifications")
        if wm:
            _start_window_manager(desk)
        if tray:
            desk._procs.append(_start(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                                       "--height", "24", "--transparent", "false", "--tint", "0x404040"], env))
            wait_until(lambda: selection_owned(display, "_NET_SYSTEM_TRAY_S0"), timeout=30,
                       what="trayer to own the system tray selection")
        yield desk
    finally:
        for proc in reversed(desk._procs):  # each was started in its own process group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
