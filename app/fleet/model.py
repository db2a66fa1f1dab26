"""What the Fleet tab shows, read from Prometheus: the machines (Prometheus' ``instance`` of
every target that exports llmmon's series), their LLM servers and loaded models, tokens/s, GPU
use and memory, the alerts firing; and the history of one machine for its charts.

Names are those of ``docs/metrics.md``; each machine's series carry its ``instance`` label.
Tokens/s of a server is the server's own figure where it has one (vLLM, llama.cpp), else what
llmmon's proxy measured (``llm_tokens_per_second``).
"""
from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from app.fleet.client import Alert, PrometheusClient, Vector
from app.records import Labels, SeriesKey
from app.server_kinds import is_server_kind, own_series

SERVER_TOKENS = tuple(own_series("tokens_per_second"))  # each server kind's own tokens/s (app/server_kinds.py)
QUERIES = {
    # every machine that exported llmmon's series in the last day (one that stopped still shows)
    "machines": "count by (instance) (last_over_time(llmmon_source_up[1d]))",
    "up": "up",
    "sources": "llmmon_source_up",
    "models": "llm_model_loaded",
    "measured": "sum by (instance, server) (llm_tokens_per_second)",
    "reported": f'sum by (instance, server) ({{__name__=~"{"|".join(SERVER_TOKENS)}"}})',
    "gpu_util": "avg by (instance) (gpu_utilization_percent)",
    "gpu_used": "sum by (instance) (gpu_memory_used_bytes)",
    "gpu_total": "sum by (instance) (gpu_memory_total_bytes)",
    "gpus": "count by (instance) (gpu_info)",
}
"""The instant queries of one reading of the fleet (plus ``/api/v1/alerts``)."""
HISTORY_METRICS = (
    "llm_tokens_per_second", *SERVER_TOKENS, "llm_ttft_seconds", "vllm_requests_running", "vllm_requests_waiting",
    "gpu_utilization_percent", "gpu_memory_used_bytes", "system_cpu_percent", "system_memory_percent",
)
"""The series a machine's charts draw (one range query for all of them)."""
CHART_POINTS = 500
"""About this many points per series and chart: the step of the range query follows the span."""
_PER_MACHINE = ("instance", "job")


@dataclass(frozen=True, slots=True, order=True)
class Server:
    name: str
    kind: str
    up: bool


@dataclass(frozen=True, slots=True)
class Machine:
    """One row of the machines table."""

    instance: str
    scraped: bool | None          # Prometheus' ``up``; None: it no longer scrapes this machine
    servers: tuple[Server, ...] = ()
    models: tuple[tuple[str, str], ...] = ()   # (server, model)
    tokens_per_second: float | None = None
    gpus: int = 0
    gpu_utilization_percent: float | None = None
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True)
class FleetSnapshot:
    """One reading of the whole fleet (or why there is none: ``error``)."""

    machines: tuple[Machine, ...] = ()
    alerts: tuple[Alert, ...] = ()           # firing, of llmmon's machines
    fetched_at: float = 0.0
    took_s: float = 0.0
    error: str = ""


def _by_instance(vectors: list[Vector]) -> dict[str, list[Vector]]:
    out: dict[str, list[Vector]] = defaultdict(list)
    for v in vectors:
        out[v.label("instance")].append(v)
    return out


def _one(vectors: list[Vector]) -> float | None:
    return vectors[0].value if vectors else None


def read_fleet(client: PrometheusClient) -> FleetSnapshot:
    """Ask Prometheus for the fleet; raises :class:`~app.fleet.client.PrometheusError`."""
    started = time.perf_counter()
    answers = {key: client.query(promql) for key, promql in QUERIES.items()}
    instances = sorted(v.label("instance") for v in answers["machines"])
    up = {v.label("instance"): v.value for v in answers["up"]}
    sources, models = _by_instance(answers["sources"]), _by_instance(answers["models"])
    measured, reported = _by_instance(answers["measured"]), _by_instance(answers["reported"])
    gpu_util, gpu_used = _by_instance(answers["gpu_util"]), _by_instance(answers["gpu_used"])
    gpu_total, gpus = _by_instance(answers["gpu_total"]), _by_instance(answers["gpus"])
    alerts = [a for a in client.alerts() if a.state == "firing" and a.label("instance") in instances]
    machines = []
    for instance in instances:
        servers = tuple(sorted(Server(v.label("source"), v.label("kind"), v.value == 1.0)
                               for v in sources.get(instance, []) if is_server_kind(v.label("kind"))))
        speeds = {v.label("server"): v.value for v in measured.get(instance, [])}
        speeds.update({v.label("server"): v.value for v in reported.get(instance, [])})
        machines.append(Machine(
            instance, None if instance not in up else up[instance] == 1.0, servers,
            tuple(sorted((v.label("server"), v.label("model")) for v in models.get(instance, []))),
            sum(speeds.values()) if speeds else None, int(_one(gpus.get(instance, [])) or 0),
            _one(gpu_util.get(instance, [])), _one(gpu_used.get(instance, [])), _one(gpu_total.get(instance, [])),
            tuple(a for a in alerts if a.label("instance") == instance)))
    return FleetSnapshot(tuple(machines), tuple(alerts), time.time(), time.perf_counter() - started)


_versions = itertools.count(1)


@dataclass
class SeriesSet:
    """A machine's series over a time range, as read from Prometheus; answers the questions a
    chart asks of :class:`~app.buffers.LiveBuffers` (``keys``, ``version``, ``window``) so the
    local charts (``widgets/timeseries_plot.py``) draw it unchanged. Keys are the series'
    names and labels without ``instance`` and ``job``."""

    instance: str = ""
    start: float = 0.0
    end: float = 0.0
    series: dict[SeriesKey, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    fetched_at: float = 0.0
    generation: int = field(default_factory=lambda: next(_versions))  # new with every reading

    def keys(self, name: str | None = None) -> list[SeriesKey]:
        return sorted(k for k in self.series if name is None or k[0] == name)

    def window(self, key: SeriesKey, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        ts, values = self.series.get(key, (np.empty(0), np.empty(0)))
        if since is not None and len(ts):
            first = int(np.searchsorted(ts, since, side="left"))
            ts, values = ts[first:], values[first:]
        return ts, values

    def version(self, key: SeriesKey) -> int:
        """Changes with every reading (charts redraw then, and only then)."""
        return self.generation


def _strip(labels: Labels) -> tuple[str, Labels]:
    found = dict(labels)
    name = found.pop("__name__", "")
    return name, tuple((k, v) for k, v in sorted(found.items()) if k not in _PER_MACHINE)


def history_step(start: float, end: float, points: int = CHART_POINTS) -> float:
    """The range query's step: about ``points`` points over the span, never under 1 s.

    >>> history_step(0, 86400)
    173.0
    """
    return float(max(1, round((end - start) / points)))


def read_history(client: PrometheusClient, instance: str, start: float, end: float) -> SeriesSet:
    """The series of one machine's charts over ``[start, end]``; raises PrometheusError."""
    names = "|".join(HISTORY_METRICS)
    selector = f'{{__name__=~"{names}", instance="{_escape(instance)}"}}'
    result = client.query_range(selector, start, end, history_step(start, end))
    series = {}
    for s in result:
        name, labels = _strip(s.labels)
        series[(name, labels)] = (s.ts, s.values)
    return SeriesSet(instance, start, end, series, time.time())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
