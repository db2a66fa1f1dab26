"""The small interface every collector implements (one class per source, like glances' plugins).

It lives in the core because the scheduler and the hub run collectors through it and know no
concrete one: which collectors run is decided in :mod:`app.runtime` alone.

A collector knows one source and nothing about Qt, SQLite or alerts. The scheduler calls
:meth:`Collector.poll` on the collector's own thread every ``interval`` seconds. ``poll`` returns
records; to report the source's state it includes a :class:`~app.records.Health` record (a poll
that returns none is taken as "up", one that raises as "error"). I/O inside ``poll`` must use
timeouts shorter than a few seconds so that stopping the app never waits long.

A collector may start others (discovery starts one per LLM server it finds): after each poll the
scheduler asks :meth:`Collector.new_collectors` and runs what it gets on threads of their own.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from app.records import Record


class Collector(ABC):
    """Base class for a source of records.

    Attributes:
        name: unique source id, also the ``source`` of its Health records (``"system"``,
            ``"ollama@127.0.0.1:11434"``).
        kind: what sort of source it is (``"system"``, ``"gpu"``, ``"ollama"``...).
        interval: seconds between polls while the source is healthy.
        max_backoff: longest wait between polls while the source is down or failing.
    """

    name: str = ""
    kind: str = ""
    interval: float = 1.0
    max_backoff: float = 30.0

    @abstractmethod
    def poll(self) -> list[Record]:
        """Read the source once and return what was seen."""

    def new_collectors(self) -> list[Collector]:
        """Collectors this one created since it was last asked, for the scheduler to run (each
        is handed over once). Called on this collector's thread, right after :meth:`poll`."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook: a collector holding nothing needs none
        """Release resources (HTTP clients, NVML handles). Called once, after the last poll."""
