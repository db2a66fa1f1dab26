"""One llmmon window per database: a second launch asks the running one to come to the front.

The running window listens on a local socket (``QLocalServer``) named after the user and the
database's resolved path. A new launch first tries to connect: if the first one answers, it
is shown and raised and the new launch exits. A socket file left behind by a crash refuses
connections, so the new launch goes on; listening with an access option makes Qt bind in a
private folder and rename the socket over the old file. That is safe only because the caller
holds the database's recorder lock (``app/recorder_lock.py``) by then: no live llmmon owns
that name.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

SHOW = b"show\n"
SHOWN = b"shown\n"


def server_name(db: Path) -> str:
    digest = hashlib.sha256(str(db.expanduser().resolve()).encode()).hexdigest()[:16]
    user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:8]
    return f"llmmon-{user}-{digest}"


def ask_running_instance(name: str, timeout_ms: int = 2000) -> bool:
    """True when an llmmon window already runs for this name and has agreed to come forward."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False  # nobody listens (or a crashed one's socket file: connection refused)
    socket.write(SHOW)
    socket.flush()
    answer = b""
    while SHOWN not in answer and socket.waitForReadyRead(timeout_ms):
        answer += socket.readAll().data()
    socket.disconnectFromServer()
    return SHOWN in answer


class InstanceServer(QObject):
    """Listens for later launches; ``show_requested`` asks the GUI to bring the window forward."""

    show_requested = Signal()

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)  # this user only
        self.server.newConnection.connect(self._accept)
        if self.server.listen(name):
            log.info("listening for later launches on %s", self.server.fullServerName())
        else:
            log.warning("a later launch cannot reach this window (%s): %s", name, self.server.errorString())

    def _accept(self) -> None:
        while (socket := self.server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(socket.deleteLater)

    def _read(self, socket: QLocalSocket) -> None:
        while socket.canReadLine():  # readyRead comes again when the rest of a line arrives
            if socket.readLine().data() == SHOW:
                log.info("a second launch asked for the window")
                self.show_requested.emit()
                socket.write(SHOWN)
                socket.flush()
