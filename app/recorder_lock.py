"""One recorder per database: an advisory lock file next to it (``llmmon.db.lock``).

Whoever records into a database (the desktop app, ``--headless``, ``main.py proxy``) holds an
exclusive ``flock`` on the lock file for as long as it runs, and writes who it is into the file.
A second recorder on the same database is refused with a message naming the first. The kernel
drops the lock when its process ends however it ends (a crash, ``kill -9``), so a stale lock file
never blocks the next start: the file stays, the lock does not.

(Not the ``filelock`` package: it truncates the file on every attempt, which would erase the
holder's details before the refused process could read them.)
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MODES = {"gui": "the llmmon window", "headless": "a headless llmmon recorder", "proxy": "an llmmon proxy"}


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a database's lock, from the lock file (best effort: it may be half-written)."""

    pid: int | None
    mode: str
    started: float | None

    def describe(self) -> str:
        who = MODES.get(self.mode, "another llmmon")
        details = [f"pid {self.pid}"] if self.pid else []
        if self.started:
            details.append("since " + time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)))
        return who + (f" ({', '.join(details)})" if details else "")


class AlreadyRecording(Exception):
    """Another process records into this database."""

    def __init__(self, db: Path, holder: LockHolder) -> None:
        self.db = db
        self.holder = holder
        super().__init__(f"llmmon is already recording to {db}: {holder.describe()}. Stop that one "
                         "first, or record into another database with --db PATH.")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class RecorderLock:
    """The lock on one database. ``acquire`` raises :class:`AlreadyRecording`; ``release``
    (or the process ending) gives it back.

    Args:
        db: the database file (the lock file goes next to it; its folder is created).
        mode: who is recording, one of :data:`MODES`.
    """

    def __init__(self, db: Path, mode: str) -> None:
        self.db = db
        self.path = lock_path(db)
        self.mode = mode
        self._file: TextIO | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            log.warning("cannot lock %s on this system: two recorders could share it", self.db)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+", encoding="utf-8")  # held open while recording
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = parse_holder(file.read())
            file.close()
            raise AlreadyRecording(self.db, holder) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "mode": self.mode, "started": time.time()}))
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> RecorderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def parse_holder(text: str) -> LockHolder:
    try:
        data = json.loads(text)
        return LockHolder(int(data["pid"]), str(data["mode"]), float(data["started"]))
    except (ValueError, KeyError, TypeError):  # written by a newer llmmon, or mid-write
        return LockHolder(None, "", None)
