"""Slow work (database reads, store calls that wait for the writer, exports) runs on a worker
thread; its result comes back to the GUI thread through a Qt signal, never a blocking call."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import SignalInstance

log = logging.getLogger(__name__)


def run_in_thread(name: str, work: Callable[[], object], done: SignalInstance) -> None:
    """Run ``work()`` on a daemon thread, then emit ``done`` with its result, or with the
    exception it raised (the receiver shows it; the app keeps running). ``done`` must belong
    to a QObject of the GUI thread, so Qt queues the call there."""
    def target() -> None:
        try:
            result: object = work()
        except Exception as exc:
            result = exc
        try:
            done.emit(result)
        except RuntimeError:  # the widget was closed while the work ran: nobody to tell
            log.debug("%s finished after its widget was closed", name)
    threading.Thread(target=target, name=name, daemon=True).start()
