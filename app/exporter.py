"""The Prometheus exporter: ``/metrics`` over HTTP, so a Prometheus can scrape this machine.

Opt-in (``--serve-metrics [HOST:]PORT`` or ``[exporter] enabled = true``), on 127.0.0.1 unless
an address is given. It exposes, with the names of ``docs/metrics.md`` (the same as in SQLite
and the CSV export):

* every live series: the latest value of each series in the hub's
  :class:`~app.buffers.LiveBuffers` (:class:`LiveSeriesCollector`). Names ending in ``_total``
  are counters, the rest gauges. A series missing from its source's latest read is gone (a
  model unloaded, a process ended) and is not exported; nor is one not updated for
  ``max_age_s`` (its collector stopped);
* per-request histograms and counters fed from the request records of the proxy and the prompt
  test (:class:`RequestMetrics`, a hub subscriber): ``llm_request_ttft_seconds``,
  ``llm_request_duration_seconds``, ``llm_request_inter_token_seconds`` (histograms,
  ``{server,model}``), ``llm_requests_total{server,model,status,error_type}``,
  ``llm_prompt_tokens_total{server,model}``, ``llm_completion_tokens_total{server,model}``;
* ``llmmon_exporter_series_dropped_total{metric}``: label sets not exported because their metric
  already had ``max_series_per_metric`` of them.

No prompt or response text, no secret and no URL credential is ever a label. Label values are
cut to :data:`~app.records.MAX_LABEL_CHARS` characters, as in the store.

Started by the runtime as ``MetricsExporter(hub, ExporterSettings(enabled=True)).start()``
(tests/core/test_exporter.py scrapes it over HTTP).
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.buffers import LiveBuffers
from app.config import ExporterSettings
from app.records import MAX_LABEL_CHARS, Labels, Record, RequestRecord, SeriesKey, clean_text

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from app.hub import Hub

log = logging.getLogger(__name__)

MAX_AGE_S = 120.0
"""A series its collector has not updated for this long is not exported."""
SAME_READ_S = 1.0
"""Series of one metric and source stamped within this of the newest are from the same read."""
_Child = TypeVar("_Child", Counter, Histogram)
DROPPED_METRIC = "llmmon_exporter_series_dropped_total"
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.4, 0.8, 1.6)

# Counters and histograms carry no "created" timestamp series: Prometheus 2.x would store each
# as a series of its own (``*_created``), doubling what a fleet sends for nothing.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def cap_label(value: str) -> str:
    """A label value as the store keeps it: valid text of at most
    :data:`~app.records.MAX_LABEL_CHARS` characters (a cut one ends in ``…``).

    >>> len(cap_label("m" * 1000)), cap_label("llama3")
    (256, 'llama3')
    """
    return clean_text(value, MAX_LABEL_CHARS)


class SeriesCap:
    """At most ``max_series`` label sets per metric. What is refused is counted once per label
    set (a flood of new ones beyond another ``max_series`` is counted at each attempt: the
    memory of refusals is capped too). Thread-safe: the scrape thread and the hub's publishing
    threads both ask."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self._admitted: dict[str, set[Labels]] = collections.defaultdict(set)
        self._refused: dict[str, set[Labels]] = collections.defaultdict(set)
        self._dropped: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def admit(self, metric: str, labels: Labels) -> bool:
        with self._lock:
            admitted = self._admitted[metric]
            if labels in admitted:
                return True
            if len(admitted) < self.max_series:
                admitted.add(labels)
                return True
        self.refuse(metric, labels)
        return False

    def refuse(self, metric: str, labels: Labels) -> None:
        """Count a label set that is not exported (over the cap, or names Prometheus cannot take)."""
        with self._lock:
            refused = self._refused[metric]
            if labels in refused:
                return
            if len(refused) < self.max_series:
                refused.add(labels)
            if not self._dropped[metric]:
                log.warning("exporter: %s: a series is left out (over %d series, or a name Prometheus "
                            "cannot take); counted in %s", metric, self.max_series, DROPPED_METRIC)
            self._dropped[metric] += 1

    def dropped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped)


def _source(labels: Labels) -> str:
    """Which read a series comes from: its server or source (``llmmon_source_up``), else the
    one collector of its metric (system, GPU)."""
    found = dict(labels)
    return found.get("server") or found.get("source") or ""


def fresh_series(buffers: LiveBuffers, now: float,
                 max_age_s: float = MAX_AGE_S) -> Iterator[tuple[SeriesKey, float]]:
    """``(key, latest value)`` of every series still current: stamped within
    :data:`SAME_READ_S` of the newest series of its metric and source, and within ``max_age_s``
    of ``now``. In name order."""
    groups: dict[tuple[str, str], list[tuple[SeriesKey, float, float]]] = collections.defaultdict(list)
    for key in buffers.keys():
        point = buffers.latest(key)
        if point is not None:
            groups[(key[0], _source(key[1]))].append((key, point[0], point[1]))
    for _group, members in sorted(groups.items()):
        newest = max(ts for _, ts, _ in members)
        if newest < now - max_age_s:
            continue
        for key, ts, value in members:
            if ts >= newest - SAME_READ_S:
                yield key, value


class LiveSeriesCollector(Collector):
    """A ``prometheus_client`` collector over the latest value of each live series."""

    def __init__(self, buffers: LiveBuffers, cap: SeriesCap, clock: Callable[[], float] = time.time,
                 max_age_s: float = MAX_AGE_S) -> None:
        self.buffers = buffers
        self.cap = cap
        self.clock = clock
        self.max_age_s = max_age_s
        # Each series is checked once: its exported labels, or None when it is left out.
        self._prepared: dict[SeriesKey, dict[str, str] | None] = {}

    def _labels(self, key: SeriesKey) -> dict[str, str] | None:
        if key in self._prepared:
            return self._prepared[key]
        name, labels = key
        prepared = None
        if not _exportable(name, labels):
            self.cap.refuse(name, labels)  # Prometheus would refuse the whole page
        elif self.cap.admit(name, labels):
            prepared = {k: cap_label(v) for k, v in labels}
        self._prepared[key] = prepared
        return prepared

    def collect(self) -> Iterable[Metric]:
        family: Metric | None = None
        for key, value in fresh_series(self.buffers, self.clock(), self.max_age_s):
            labels = self._labels(key)
            if labels is None:
                continue
            name = key[0]
            if family is None or family.name != _family_name(name):
                if family is not None:
                    yield family
                family = _family(name)
            family.add_sample(name, labels, value)
        if family is not None:
            yield family


def _exportable(name: str, labels: Labels) -> bool:
    """Whether Prometheus can take the series' names."""
    return bool(_METRIC_NAME.fullmatch(name)) and all(
        _LABEL_NAME.fullmatch(k) and not k.startswith("__") for k, _ in labels)


def _family_name(name: str) -> str:
    """The family of a sample name: a counter's family has no ``_total`` suffix."""
    return name[: -len("_total")] if name.endswith("_total") else name


def _family(name: str) -> Metric:
    help_text = "latest value recorded by llmmon (docs/metrics.md)"
    if name.endswith("_total"):
        return CounterMetricFamily(name, help_text)
    return GaugeMetricFamily(name, help_text)


class DroppedSeriesCollector(Collector):
    """``llmmon_exporter_series_dropped_total{metric}``: what the cap and name checks left out."""

    def __init__(self, cap: SeriesCap) -> None:
        self.cap = cap

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(DROPPED_METRIC, "label sets not exported: over the per-metric "
                                     "series cap, or names Prometheus cannot take", labels=["metric"])
        for metric, n in sorted(self.cap.dropped().items()):
            family.add_metric([cap_label(metric)], float(n))
        yield family


class RequestMetrics:
    """Histograms and counters of the finished requests; a hub subscriber (quick, thread-safe).

    Only successful requests are observed in the histograms (as in ``llm_ttft_seconds``);
    every request is counted in ``llm_requests_total`` by status (``"0"``: no response was
    sent) and error type. Token counters take the server's own counts only, not estimates.
    """

    def __init__(self, registry: CollectorRegistry, cap: SeriesCap) -> None:
        self.cap = cap
        per_model = ["server", "model"]
        self.ttft = Histogram("llm_request_ttft_seconds", "time to first token of each successful streamed "
                              "request", per_model, registry=registry, buckets=TTFT_BUCKETS)
        self.duration = Histogram("llm_request_duration_seconds", "time from request to the end of the answer "
                                  "of each successful request", per_model, registry=registry,
                                  buckets=DURATION_BUCKETS)
        self.itl = Histogram("llm_request_inter_token_seconds", "mean time between tokens of each successful "
                             "streamed request", per_model, registry=registry, buckets=ITL_BUCKETS)
        self.requests = Counter("llm_requests", "finished requests by HTTP status and error type",
                                [*per_model, "status", "error_type"], registry=registry)
        self.prompt_tokens = Counter("llm_prompt_tokens", "prompt tokens the servers reported",
                                     per_model, registry=registry)
        self.completion_tokens = Counter("llm_completion_tokens", "completion tokens the servers reported",
                                         per_model, registry=registry)

    def __call__(self, records: Iterable[Record]) -> None:
        for r in records:
            if isinstance(r, RequestRecord):
                self.observe(r)

    def _labelled(self, metric: _Child, name: str, labels: dict[str, str]) -> _Child | None:
        values = {k: cap_label(v) for k, v in labels.items()}
        if not self.cap.admit(name, tuple(sorted(values.items()))):
            return None
        return metric.labels(**values)

    def _inc(self, counter: Counter, name: str, amount: float | None, labels: dict[str, str]) -> None:
        child = self._labelled(counter, name, labels) if amount else None
        if child is not None and amount:
            child.inc(amount)

    def _observe(self, histogram: Histogram, name: str, value: float | None, labels: dict[str, str]) -> None:
        child = self._labelled(histogram, name, labels) if value is not None else None
        if child is not None and value is not None:
            child.observe(value)

    def observe(self, r: RequestRecord) -> None:
        who = {"server": r.server, "model": r.model}
        self._inc(self.requests, "llm_requests_total", 1, {**who, "status": str(r.status), "error_type": r.error_type})
        if not r.tokens_estimated:
            self._inc(self.prompt_tokens, "llm_prompt_tokens_total", r.prompt_tokens, who)
            self._inc(self.completion_tokens, "llm_completion_tokens_total", r.completion_tokens, who)
        if r.ok:
            self._observe(self.ttft, "llm_request_ttft_seconds", r.ttft_s, who)
            self._observe(self.duration, "llm_request_duration_seconds", r.latency_s, who)
            self._observe(self.itl, "llm_request_inter_token_seconds", r.itl_mean_s, who)


class MetricsExporter:
    """The ``/metrics`` endpoint of one running llmmon.

    Args:
        buffers: the live series (the hub's buffers).
        settings: where to listen and the series cap.
        clock: wall-clock time, for the age of series.
    """

    def __init__(self, buffers: LiveBuffers, settings: ExporterSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cap = SeriesCap(settings.max_series_per_metric)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LiveSeriesCollector(buffers, self.cap, clock))
        self.requests = RequestMetrics(self.registry, self.cap)
        self.registry.register(DroppedSeriesCollector(self.cap))
        self.error = ""
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_hub(cls, hub: Hub, settings: ExporterSettings) -> MetricsExporter:
        """An exporter of the hub's series that also counts the requests published through it."""
        exporter = cls(hub.buffers, settings, hub.clock)
        hub.subscribe(exporter.requests)
        return exporter

    @property
    def address(self) -> str:
        host = self.settings.listen_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def port(self) -> int:
        return self._server.server_port if self._server is not None else self.settings.listen_port

    @property
    def running(self) -> bool:
        return self._server is not None

    def exposition(self) -> bytes:
        """The page a scrape gets (Prometheus text format)."""
        return prometheus_client.generate_latest(self.registry)

    def start(self) -> bool:
        """Listen; False (and :attr:`error` says why) when the address cannot be used."""
        if self._server is not None:
            return True
        host, port = self.settings.listen_host, self.settings.listen_port
        try:
            self._server, self._thread = prometheus_client.start_http_server(port, host, self.registry)
        except OSError as exc:
            self.error = f"metrics exporter cannot listen on {host}:{port}: {exc.strerror or exc}"
            log.error("%s", self.error)
            return False
        self.error = ""
        log.info("metrics exporter: http://%s/metrics", self.address)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def status(self) -> str:
        """One line for the user: where Prometheus can scrape, or why it cannot."""
        return f"metrics for Prometheus on http://{self.address}/metrics" if self.running else self.error
