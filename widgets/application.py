"""Starts the Qt application around a :class:`~app.runtime.Runtime` and shuts both down cleanly
(collectors stopped, store flushed) however the app is quit: window closed, Ctrl-Q, Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.runtime import Runtime
from widgets.main_window import MainWindow
from widgets.theme import apply_plot_theme


def run_gui(args: argparse.Namespace) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("llmmon")
    app.setOrganizationName("llmmon")
    apply_plot_theme()
    runtime = Runtime.create(args.db, session_name=args.session_name)
    window = MainWindow(runtime)
    app.aboutToQuit.connect(runtime.stop)
    # Python only runs signal handlers when the interpreter gets control: a timer gives it that.
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    ticker = QTimer()
    ticker.start(250)
    ticker.timeout.connect(lambda: None)
    runtime.start()
    window.show()
    if args.smoke:
        QTimer.singleShot(1500, app.quit)
    return app.exec()
