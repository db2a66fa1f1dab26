"""Helpers shared by the tests: waiting on conditions without fixed sleeps, reading a DB, the
environment that keeps llmmon away from the real user's files."""
from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.records import Health, Record


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` (every 10 ms, on an Event so it wakes promptly) until it is truthy.

    The thread-free equivalent of pytest-qt's ``waitUntil`` for core tests that have no Qt.
    """
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        tick.wait(0.01)


def health_of(records: list[Record]) -> Health:
    """The Health record a collector's poll ends with."""
    health = records[-1]
    assert isinstance(health, Health), f"a poll ends with its Health, not {health!r}"
    return health


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(path: Path, table: str) -> int:
    return query(path, f"SELECT count(*) FROM {table}")[0][0]


def user_dirs_env(home: Path) -> dict[str, str]:
    """Environment variables that put llmmon's data, config, state and cache under ``home``
    (for this process through monkeypatch, or for a child process)."""
    return {"XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"), "XDG_CACHE_HOME": str(home / "cache"),
            "LLMMON_CONFIG": str(home / "config" / "llmmon" / "config.toml")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
