"""Counting what a thread that must not die had to drop, and logging each kind of failure once.

The store's writer, the collector threads and the hub's fan-out survive any exception that one
record or one event causes: they drop that record, count it here under a short *kind* (what
went wrong, e.g. ``"UnicodeEncodeError in the store writer"``) and carry on. The first failure
of each kind is logged as an error (its traceback goes to the log file only, so the console
shows one readable line); later ones of the same kind are only counted, so a stream of bad
records cannot flood the log. The counts are what the GUI's status bar shows.

>>> faults = Faults("example")
>>> faults.record("negative value")
>>> faults.record("negative value")
>>> faults.counts()
{'negative value': 2}
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Faults:
    """Thread-safe counts of dropped items by kind, logging the first of each kind.

    Args:
        what: who counts (``"store writer"``, ``"hub"``), for the log line.
        logger: where the first of each kind is logged.
        level: its level (errors for bugs; warnings for bad input from outside).
    """

    def __init__(self, what: str, logger: logging.Logger = log, level: int = logging.ERROR) -> None:
        self.what = what
        self.logger = logger
        self.level = level
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, exc: BaseException | None = None, detail: str = "", n: int = 1) -> None:
        """Count ``n`` dropped items of ``kind``; log the first one (``detail`` says which)."""
        with self._lock:
            first = kind not in self._counts
            self._counts[kind] = self._counts.get(kind, 0) + n
        if not first:
            return
        text = f"{self.what}: {kind}" + (f" ({detail})" if detail else "")
        if exc is not None:
            text += f": {type(exc).__name__}: {exc}"
        self.logger.log(self.level, "%s; dropped and counted (further ones of this kind are only counted)",
                        text[:2000])
        if exc is not None:  # the traceback for the log file (the console shows warnings only)
            self.logger.info("traceback of the first %s", kind, exc_info=exc)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def summary(self) -> str:
        """``"3 negative value, 1 non-finite value"``, most frequent first; ``""`` when none."""
        items = sorted(self.counts().items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{n:,} {kind}" for kind, n in items)
