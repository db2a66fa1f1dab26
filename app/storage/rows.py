"""How a record becomes a database row: the one place where what enters SQLite is made safe.

Every record the store writes passes through :func:`row_of` on the writer thread, whoever
produced it (collectors, the proxy, the prompt panel, the alert engine, a plug-in):

- text is valid UTF-8 (a lone surrogate becomes U+FFFD) and bounded: names, labels and short
  fields to :data:`~app.records.MAX_LABEL_CHARS`, messages to
  :data:`~app.records.MAX_MESSAGE_CHARS`, stored prompt/response text to
  :data:`~app.records.MAX_CONTENT_CHARS`;
- integers fit SQLite's 64-bit range, floats are finite: a field that does not becomes NULL
  (and is counted); a sample or a timestamp that is not a finite number rejects the record;
- any other type is stored as its text, or rejects the record when even that fails.

So binding a row can never raise; what cannot be stored raises :class:`Rejected` here, before
the transaction, and the store drops and counts that one record. See docs/metrics.md, Bounds.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from app.records import (
    MAX_CONTENT_CHARS,
    MAX_LABEL_CHARS,
    MAX_MESSAGE_CHARS,
    AlertEvent,
    Event,
    Labels,
    Record,
    RequestRecord,
    Sample,
    clean_text,
    labels_json,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Note = Callable[[str], None]
"""Called with a short kind for each field that had to be set to NULL."""

SampleRow = tuple[str, Labels, float, float]
"""``(name, labels, ts, value)``: the series id is looked up when the batch is written."""
Row = tuple[str, SampleRow | dict[str, Any]]
"""``(table, row)``."""


class Rejected(ValueError):
    """This record cannot be stored; the message is a short kind for the count."""


def row_of(record: Record, note: Note) -> Row:
    """The table and row for ``record`` (see the module docstring); raises :class:`Rejected`."""
    if isinstance(record, Sample):
        return "samples", sample_row(record)
    if isinstance(record, RequestRecord):
        return "requests", _request_row(record, note)
    if isinstance(record, Event):
        return "events", {"ts": timestamp(record.ts), "kind": text(record.kind), "source": text(record.source),
                          "message": text(record.message, MAX_MESSAGE_CHARS),
                          "labels": labels_json(labels(record.labels))}
    if isinstance(record, AlertEvent):
        value = number(record.value)
        if value is None and record.value is not None:
            note("alert value not a finite number (stored as NULL)")
        return "alert_events", {"ts": timestamp(record.ts), "rule": text(record.rule),
                                "state": text(record.state), "severity": text(record.severity),
                                "labels": labels_json(labels(record.labels)), "value": value,
                                "message": text(record.message, MAX_MESSAGE_CHARS)}
    raise Rejected(f"not a storable record ({type(record).__name__})")


def sample_row(sample: Sample) -> SampleRow:
    value = number(sample.value)
    if value is None:
        raise Rejected("sample value is not a finite number")
    return text(sample.name), labels(sample.labels), timestamp(sample.ts), value


def text(value: object, limit: int = MAX_LABEL_CHARS) -> str:
    """Valid, bounded text from a str (or any object's ``str()``)."""
    if not isinstance(value, str):
        try:
            value = "" if value is None else str(value)
        except Exception as exc:  # a broken __str__ is the record's fault, not the writer's
            raise Rejected(f"text field unreadable ({type(exc).__name__})") from None
    return clean_text(value, limit)


def labels(value: Any) -> Labels:
    """Canonical labels with clean, bounded keys and values; raises Rejected when malformed."""
    try:
        pairs = {text(k): text(v) for k, v in value}
    except (TypeError, ValueError):
        raise Rejected("malformed labels") from None
    return tuple(sorted(pairs.items()))


def number(value: object) -> float | None:
    """A finite float, or None (for None, non-numbers, NaN, ±inf, and ints beyond a float)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):  # bool included: True is 1.0
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def timestamp(value: object) -> float:
    ts = number(value)
    if ts is None:
        raise Rejected("timestamp is not a finite number")
    return ts


def integer(value: object) -> int | None:
    """An int SQLite can store (64-bit), or None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and INT64_MIN <= value <= INT64_MAX:
        return int(value)
    return None


_REQUEST_TEXT = {"error": MAX_MESSAGE_CHARS, "prompt_text": MAX_CONTENT_CHARS,
                 "response_text": MAX_CONTENT_CHARS}
_REQUEST_NULLABLE_TEXT = {"prompt_text", "response_text"}
_REQUEST_INT = {"status", "stream", "prompt_tokens", "completion_tokens", "tokens_estimated",
                "bytes_in", "bytes_out"}
_REQUEST_STR = {f.name for f in fields(RequestRecord)
                if f.type in ("str", "str | None")} | set(_REQUEST_TEXT)


def _request_row(record: RequestRecord, note: Note) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields(RequestRecord):
        value = getattr(record, f.name)
        if f.name == "ts_start":
            row[f.name] = timestamp(value)
        elif f.name in _REQUEST_STR:
            row[f.name] = None if value is None and f.name in _REQUEST_NULLABLE_TEXT \
                else text(value, _REQUEST_TEXT.get(f.name, MAX_LABEL_CHARS))
        elif f.name in _REQUEST_INT:
            row[f.name] = integer(value)
            if row[f.name] is None and value is not None:
                note(f"request {f.name} not a 64-bit integer (stored as NULL)")
        else:
            row[f.name] = number(value)
            if row[f.name] is None and value is not None:
                note(f"request {f.name} not a finite number (stored as NULL)")
    return row
