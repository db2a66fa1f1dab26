"""The records that flow between threads: collectors and the proxy produce them, the hub fans
them out to the store, the live buffers, the alert engine and the GUI.

All timestamps are UTC epoch seconds (``time.time()``); durations are seconds measured with a
monotonic clock. Metric names follow Prometheus conventions (``gpu_memory_used_bytes``,
``llm_tokens_per_second``) so the CSV export and an optional ``/metrics`` endpoint share them.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

MAX_LABEL_CHARS = 256
"""Longest metric name, label key or label value, and short text field (server, model,
endpoint...) llmmon keeps; longer ones are cut (see docs/metrics.md, Bounds)."""
MAX_MESSAGE_CHARS = 4096
"""Longest event, alert or error message kept."""
MAX_CONTENT_CHARS = 1_000_000
"""Longest stored prompt or response text (the proxy's own cap is lower, 16 384 by default)."""


def clean_text(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``text`` as valid Unicode (a lone UTF-16 surrogate, which UTF-8 cannot encode, becomes
    U+FFFD) and at most ``limit`` characters (a cut text ends in ``…``).

    >>> clean_text("x \\ud83d") == "x \\ufffd"
    True
    >>> clean_text("abcdef", 4)
    'abc…'
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Through UTF-16 with surrogatepass: a valid pair of surrogates becomes its one
            # character again, a lone one becomes U+FFFD.
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


Labels = tuple[tuple[str, str], ...]
"""Labels as a sorted tuple of ``(key, value)`` pairs: hashable, canonical, cheap to compare."""

SeriesKey = tuple[str, Labels]
"""A time series is identified by its metric name and its labels."""


def labels_of(mapping: Mapping[str, object] | None = None, **extra: object) -> Labels:
    """Canonical labels from a mapping and/or keyword arguments; values become strings.

    >>> labels_of({"server": "ollama"}, model="llama3")
    (('model', 'llama3'), ('server', 'ollama'))
    """
    merged = {**(mapping or {}), **extra}
    return tuple(sorted((str(k), str(v)) for k, v in merged.items()))


def labels_json(labels: Labels) -> str:
    """The canonical JSON text of labels, as stored in the ``series`` table."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def labels_from_json(text: str) -> Labels:
    return labels_of(json.loads(text))


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one time series at one instant."""

    name: str
    value: float
    ts: float
    labels: Labels = ()

    @property
    def key(self) -> SeriesKey:
        return (self.name, self.labels)


class HealthState(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"      # the source is unreachable (refused, timed out, DNS...)
    ERROR = "error"    # the source answered, but with something we cannot use
    ABSENT = "absent"  # the source does not exist on this machine (e.g. no NVIDIA driver)


@dataclass(frozen=True, slots=True)
class Health:
    """The state of one source (a server, the GPU, the machine) as its collector last saw it."""

    source: str
    state: HealthState
    ts: float
    reason: str = ""
    kind: str = ""            # a server kind of app/server_kinds.py ("ollama"...), "gpu", "system"...
    url: str = ""
    version: str = ""
    latency_s: float | None = None  # how long the poll itself took


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened once: a model loaded, a server went down, a collector failed."""

    kind: str                 # e.g. "model_loaded", "model_unloaded", "server_down", "server_up"
    source: str
    message: str
    ts: float
    labels: Labels = ()


@dataclass(slots=True)
class RequestRecord:
    """One LLM request as the metering proxy (or the prompt test panel) measured it.

    Token counts are what the server reported; when it reported none, ``tokens_estimated`` is
    True and the counts are chunk counts. Durations are seconds; ``None`` means not measured.
    """

    ts_start: float
    server: str
    endpoint: str             # "/api/chat", "/v1/chat/completions", ...
    method: str = "POST"
    model: str = ""
    client: str = ""
    status: int = 0           # HTTP status the client received; 0 when no response was sent
    stream: bool = False
    ttft_s: float | None = None
    latency_s: float | None = None
    itl_mean_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    itl_max_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    server_tokens_per_s: float | None = None   # decode speed the server itself reported
    client_tokens_per_s: float | None = None   # completion tokens / (last token - first token)
    prompt_tokens_per_s: float | None = None
    load_s: float | None = None               # model load time reported by the server
    finish_reason: str = ""
    # "", "http", "stream_error", "upstream_disconnect", "cancelled", "timeout", "upstream_down"
    error_type: str = ""
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    source: str = "proxy"     # "proxy" or "prompt_test"
    prompt_text: str | None = None    # only when the user opted in to store content
    response_text: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error_type and 200 <= self.status < 400

    @property
    def reached_server(self) -> bool:
        """Whether the request got to the server: a refused connection (``upstream_down``, the
        proxy's 502) or a refused ``Host`` never did, and says nothing about the server's
        models or speed."""
        return self.error_type not in NOT_SENT


NOT_SENT = frozenset({"upstream_down", "forbidden_host"})
"""The ``error_type`` of requests the proxy never sent to the server."""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of one alert (a rule applied to one labelled series)."""

    rule: str
    state: str                # "pending", "firing", "resolved", "acknowledged", "snoozed"
    severity: str             # "info", "warning", "critical"
    ts: float
    labels: Labels = ()
    value: float | None = None
    message: str = ""


Record = Sample | Health | Event | RequestRecord | AlertEvent
RECORD_TYPES = (Sample, Health, Event, RequestRecord, AlertEvent)
