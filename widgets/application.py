"""Starts the Qt application around a :class:`~app.runtime.Runtime` and shuts both down cleanly
(collectors stopped, store flushed) however the app is quit: window closed, Ctrl-Q, Ctrl-C."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.runtime import Runtime
from widgets.main_window import MainWindow
from widgets.theme import apply_colour_scheme
from widgets.tray import ICON_PATH, install_tray

log = logging.getLogger(__name__)


def _report_startup(started_at: float, to_stdout: bool) -> None:
    """Log how long the window took to appear (from ``main.py``'s first line; the interpreter's
    own start-up, ~20 ms, comes before that)."""
    now = time.time()
    log.info("window shown %.2f s after start", now - started_at)
    if to_stdout:
        print(f"llmmon: window shown {now - started_at:.2f} s after start (at {now:.3f})", flush=True)


def identify(app: QApplication) -> None:
    """Name the application as the desktop sees it: settings under "llmmon", the window class
    (task switchers, the .desktop entry) "llmmon" rather than "main.py", and its own icon in the
    title bar and task switcher, as in the tray."""
    app.setApplicationName("llmmon")
    app.setOrganizationName("llmmon")
    app.setDesktopFileName("llmmon")
    app.setWindowIcon(QIcon(str(ICON_PATH)))


def run_gui(args: argparse.Namespace) -> int:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    identify(app)
    runtime = Runtime.create(args.db, session_name=args.session_name,
                             serve_metrics=getattr(args, "serve_metrics", None))
    apply_colour_scheme(app, runtime.settings.theme)
    window = MainWindow(runtime)
    install_tray(app, window, runtime)  # when the desktop has a tray: owned by app
    app.aboutToQuit.connect(runtime.stop)
    # Python only runs signal handlers when the interpreter gets control: a timer gives it that.
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    ticker = QTimer()
    ticker.start(250)
    ticker.timeout.connect(lambda: None)
    runtime.start()
    window.show()
    started_at = getattr(args, "started_at", time.time())
    QTimer.singleShot(0, lambda: _report_startup(started_at, args.smoke))
    if args.smoke:
        QTimer.singleShot(1500, app.quit)
    return app.exec()
