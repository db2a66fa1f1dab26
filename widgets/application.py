"""Starts the Qt application around a :class:`~app.runtime.Runtime` and shuts both down cleanly
(collectors stopped, store flushed) however the app is quit: File → Quit or Ctrl+Q, the tray's
Quit, Ctrl-C or SIGTERM; closing the window hides it to the tray when there is one.

One window per database: a second launch brings the first one's window to the front and exits
(``widgets/single_instance.py``); a launch on a database another recorder holds is refused
(``app/recorder_lock.py``).
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication

from app.config import db_path
from app.desktop_entry import APP_ID
from app.recorder_lock import AlreadyRecording, RecorderLock
from app.runtime import Runtime
from widgets.app_icon import app_icon
from widgets.main_window import CloseBehaviour, MainWindow
from widgets.single_instance import InstanceServer, ask_running_instance, server_name
from widgets.theme import apply_colour_scheme
from widgets.tray_menu import install_tray

log = logging.getLogger(__name__)

FIRST_START_WAIT_S = 10.0  # how long a second launch waits for a first one that is still starting


def _report_startup(started_at: float, to_stdout: bool) -> None:
    """Log how long the window took to appear (from ``main.py``'s first line; the interpreter's
    own start-up, ~20 ms, comes before that)."""
    now = time.time()
    log.info("window shown %.2f s after start", now - started_at)
    if to_stdout:
        print(f"llmmon: window shown {now - started_at:.2f} s after start (at {now:.3f})", flush=True)


class QuitOnSignals(QSocketNotifier):
    """Ctrl-C and SIGTERM quit cleanly. Python runs signal handlers only when the interpreter
    gets control: the byte the signal writes to a socket Qt watches gives it that (no timer
    waking the app up several times a second)."""

    def __init__(self, quit_app: Callable[[], None], parent: QObject) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        super().__init__(self._reader.fileno(), QSocketNotifier.Type.Read, parent)
        self.activated.connect(self._drain)
        signal.set_wakeup_fd(self._writer.fileno())
        signal.signal(signal.SIGINT, lambda *_: quit_app())
        signal.signal(signal.SIGTERM, lambda *_: quit_app())

    def _drain(self) -> None:
        self._reader.recv(64)  # the Python handler runs as soon as this returns


def _bring_running_forward(name: str, still_starting: bool) -> bool:
    """Ask a running llmmon window for this database to come to the front. When it holds the
    lock but does not answer yet (``still_starting``), keep asking for a while."""
    deadline = time.monotonic() + (FIRST_START_WAIT_S if still_starting else 0)
    while True:
        if ask_running_instance(name):
            print("llmmon: already running for this database; brought its window to the front", flush=True)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)  # the first launch is between taking the lock and listening


def identify(app: QApplication) -> None:
    """Name the application as the desktop sees it: settings under "llmmon", the window's app id
    (desktops match it to llmmon.desktop) "llmmon", and its own icon in the title bar and task
    switcher, as in the tray."""
    app.setApplicationName("llmmon")
    app.setOrganizationName("llmmon")
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())


def run_gui(args: argparse.Namespace) -> int:
    existing = QApplication.instance()
    # argv[0] becomes the X11 window class's instance name (else "main.py").
    app = existing if isinstance(existing, QApplication) else QApplication([APP_ID])
    identify(app)
    db = db_path(args.db)
    name = server_name(db)
    if _bring_running_forward(name, still_starting=False):
        return 0
    lock = RecorderLock(db, "gui")
    try:
        lock.acquire()
    except AlreadyRecording as refused:  # main.py shows it (stderr and a dialog)
        if refused.holder.mode == "gui" and _bring_running_forward(name, still_starting=True):
            return 0
        raise
    try:
        return _run_window(app, args, InstanceServer(name, app))
    finally:
        lock.release()


def _run_window(app: QApplication, args: argparse.Namespace, instance: InstanceServer) -> int:
    runtime = Runtime.create(args.db, session_name=args.session_name,
                             serve_metrics=getattr(args, "serve_metrics", None))
    apply_colour_scheme(app, runtime.settings.theme)
    window = MainWindow(runtime)
    tray = install_tray(app, window, runtime)  # when the desktop has a tray: owned by app
    if tray is None:
        window.close_behaviour = CloseBehaviour.ASK_TO_QUIT
    instance.show_requested.connect(window.bring_to_front)
    app.aboutToQuit.connect(runtime.stop)
    QuitOnSignals(lambda: window.quit_app(ask=False), app)
    runtime.start()
    window.commands.refresh_autostart()
    if args.smoke or not window.commands.start_minimised.isChecked():
        window.show()
    elif tray is None:
        window.showMinimized()  # nowhere else to go
    else:
        log.info("started in the tray (start minimised is on)")
    started_at = getattr(args, "started_at", time.time())
    QTimer.singleShot(0, lambda: _report_startup(started_at, args.smoke))
    if args.smoke:
        QTimer.singleShot(1500, window.quit_app)
    return app.exec()
