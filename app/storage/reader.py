"""One long-lived read-only connection on the store's file, for a reader that queries again and
again from one thread (a tab, the charts' history): opened when first needed, and reopened after
an error, so a database that was locked, replaced or not there yet is read again next time.

One-off reads (export and the session browser on worker threads, the window looking up a
session's range) open their own connection with :meth:`app.storage.store.Store.reader` and
close it when done.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable


class ReadConnection:
    """A lazily opened connection.

    Args:
        connect: opens a new read-only connection (``Store.reader``).

    >>> db = ReadConnection(lambda: sqlite3.connect(":memory:"))
    >>> db.get().execute("SELECT 1").fetchone()
    (1,)
    >>> db.reset()  # after an sqlite3.Error: the next get() opens a fresh connection
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None

    def get(self) -> sqlite3.Connection:
        """The connection, opened now if needed; raises :class:`sqlite3.Error` if it cannot be."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def reset(self) -> None:
        """Close the connection (after an error, or when done); the next :meth:`get` reopens."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    close = reset
