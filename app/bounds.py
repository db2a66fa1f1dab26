"""The bounds every sample and request record respects before anyone sees it.

The hub passes each published batch through :meth:`Bounds.check`, so the store, the live
charts, the alert engine and the request statistics all see the same sane values, whichever
collector, proxy or panel produced them. What breaks a bound is dropped (or, for a field of a
request, set to "not measured") and counted by reason in :attr:`Bounds.faults`; each reason is
logged once. docs/metrics.md ("Bounds") lists them for users:

- a sample's value and time are finite numbers; ``|value| <= MAX_VALUE`` (1e15);
- no series is negative (counts, bytes, rates, durations, shares) except temperatures;
- ``*_ratio`` is within [0, 1] and ``*_percent`` within [0, 100]: up to 5 % above the top
  is rounding and clamped to it, more is dropped;
- names, label keys and label values are valid text of at most 256 characters;
- each source (the ``server`` label, else the metric's first word: ``system``, ``gpu``...) may
  start at most ``new_series_per_minute`` new series a minute; more are dropped, with one
  ``series_limit`` :class:`~app.records.Event` and one log line per source and minute;
- a request's durations, rates, token and byte counts are finite, non-negative and at most
  ``MAX_VALUE``; one that is not becomes ``None`` (not measured).

Counter resets are the collectors' business (a counter that goes down restarted from zero:
:func:`collectors.prometheus.counter_increase`), so a rate is never negative to begin with.

>>> bounds = Bounds()
>>> [s.value for s in bounds.check([Sample("gpu_share_ratio", 1.02, 0.0), Sample("x_bytes", -1.0, 0.0)])]
[1.0]
>>> bounds.faults.counts()
{'negative value': 1}
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from app.faults import Faults
from app.records import MAX_LABEL_CHARS, Event, Labels, Record, RequestRecord, Sample, SeriesKey, clean_text

log = logging.getLogger(__name__)

MAX_VALUE = 1e15
"""No series llmmon records gets near this (a petabyte, a million billion tokens): beyond, it is garbage."""
TOP_SLACK = 0.05
"""A ratio or percentage up to this share above its top is rounding in the source: clamped."""
NEW_SERIES_PER_MINUTE = 200
SIGNED = frozenset({"gpu_temperature_celsius"})
"""The only series that may be negative."""

_TOPS = (("_ratio", 1.0), ("_percent", 100.0))
_REQUEST_NUMBERS = tuple(f.name for f in fields(RequestRecord)
                         if f.type in ("float | None", "int | None", "int") and f.name not in ("status", "ts_start"))


def bounded_value(name: str, value: float) -> tuple[float | None, str]:
    """``(value, "")`` within the bounds (clamped when it is rounding), or ``(None, reason)``."""
    if not math.isfinite(value):
        return None, "non-finite value"
    if abs(value) > MAX_VALUE:
        return None, "value beyond 1e15"
    if value < 0 and name not in SIGNED:
        return None, "negative value"
    for suffix, top in _TOPS:
        if name.endswith(suffix) and value > top:
            if value <= top * (1 + TOP_SLACK):
                return top, ""
            return None, f"{suffix[1:]} above {top:g}"
    return value, ""


class Bounds:
    """Checks published batches (see the module docstring). Thread-safe.

    Args:
        new_series_per_minute: new series one source may start per minute.
        clock: wall-clock time for the warning events.
        monotonic: the clock of the per-minute windows.
    """

    def __init__(self, new_series_per_minute: int = NEW_SERIES_PER_MINUTE,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.new_series_per_minute = new_series_per_minute
        self.clock = clock
        self.monotonic = monotonic
        self.faults = Faults("bounds", log, logging.WARNING)
        self._known: set[SeriesKey] = set()
        self._windows: dict[str, tuple[float, int, bool]] = {}  # source → (start, new series, warned)
        self._lock = threading.Lock()

    def check(self, records: list[Record]) -> list[Record]:
        """The records that respect the bounds (some clamped or with fields unset), followed by
        any ``series_limit`` warning events."""
        out: list[Record] = []
        warnings: list[Record] = []
        for record in records:
            try:
                if isinstance(record, Sample):
                    checked: Record | None = self._sample(record, warnings)
                elif isinstance(record, RequestRecord):
                    checked = self._request(record)
                else:
                    checked = record
            except Exception as exc:  # a record too broken to check is dropped, never the batch
                self.faults.record(f"unreadable record ({type(exc).__name__})", exc, repr(record)[:300])
                continue
            if checked is not None:
                out.append(checked)
        return out + warnings

    def _sample(self, sample: Sample, warnings: list[Record]) -> Sample | None:
        value = sample.value
        if type(value) is not float:
            try:
                value = float(value)
            except (TypeError, ValueError, OverflowError):
                self.faults.record("sample value is not a number", detail=repr(sample)[:300])
                return None
        ts = sample.ts
        if not isinstance(ts, (int, float)) or not math.isfinite(ts):
            self.faults.record("sample time is not a finite number", detail=repr(sample)[:300])
            return None
        bounded, why = bounded_value(sample.name, value)
        if bounded is None:
            self.faults.record(why, detail=repr(sample)[:300])
            return None
        key = (sample.name, sample.labels)
        if key not in self._known:
            key = (clean_text(str(sample.name)), _clean_labels(sample.labels))
            if key not in self._known and not self._admit(key, warnings):
                return None
        if bounded is not sample.value or key != (sample.name, sample.labels):
            return replace(sample, name=key[0], labels=key[1], value=bounded)
        return sample

    def _admit(self, key: SeriesKey, warnings: list[Record]) -> bool:
        """Count a new series against its source's minute; False when over the limit."""
        name, labels = key
        found = dict(labels)
        source = found.get("server") or found.get("source") or name.split("_", 1)[0]
        now = self.monotonic()
        with self._lock:
            if key in self._known:
                return True
            start, started, warned = self._windows.get(source, (now, 0, False))
            if now - start >= 60.0:
                start, started, warned = now, 0, False
            if started < self.new_series_per_minute:
                self._windows[source] = (start, started + 1, warned)
                self._known.add(key)
                return True
            self._windows[source] = (start, started, True)
        self.faults.record("new series over the per-minute limit", detail=f"{name} {dict(labels)}"[:300])
        if not warned:
            message = (f"{source} started more than {self.new_series_per_minute} new series within a minute "
                       f"(the latest: {name} {dict(labels)}); its further new series are dropped until the "
                       "minute is over. A client or server is sending ever-new label values (model names?).")
            log.warning("%s", message[:1000])
            warnings.append(Event("series_limit", source, clean_text(message, 1000), self.clock(),
                                  (("limit", str(self.new_series_per_minute)),)))
        return False

    def _request(self, record: RequestRecord) -> RequestRecord:
        unset: dict[str, Any] = {}  # None: "not measured" (the store writes NULL)
        for name in _REQUEST_NUMBERS:
            value = getattr(record, name)
            if value is None or isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)) or not 0 <= value <= MAX_VALUE:  # NaN fails too
                unset[name] = None
                self.faults.record(f"request {name} out of bounds (set to not measured)", detail=repr(value)[:100])
        return replace(record, **unset) if unset else record


def _clean_labels(labels: Labels) -> Labels:
    return tuple(sorted({clean_text(str(k), MAX_LABEL_CHARS): clean_text(str(v), MAX_LABEL_CHARS)
                         for k, v in labels}.items()))
