"""vLLM (Prometheus ``/metrics`` + ``/v1/models``) and plain OpenAI-compatible servers.

:class:`OpenAICompatCollector` suits any server that speaks the OpenAI API (LM Studio,
llama-cpp-python, vLLM without metrics...): it reads ``/v1/models`` and reports up/down.
:class:`VllmCollector` adds vLLM's ``/health`` (a dead engine answers 500) and ``/metrics``:

- gauges as they are: requests running and waiting, KV-cache usage (0–1);
- counters as rates between two scrapes, a counter that went down meaning a restart (never a
  negative rate): prompt and generation tokens/s, preemptions/s, finished requests/s by
  finish reason;
- histograms as p50/p90/p99 over the last ``window_s`` seconds, from the difference of the
  cumulative bucket counts (TTFT, inter-token latency, end-to-end latency, queue time), and
  the prefix-cache hit ratio over the same window.

Old and new metric names are both accepted (vLLM renames in X.Y, hides in X.Y+1, removes in
X.Y+2): ``kv_cache_usage_perc`` / ``gpu_cache_usage_perc``, ``inter_token_latency_seconds`` /
``time_per_output_token_seconds``, ``prefix_cache_*`` / ``gpu_prefix_cache_*``. Series of one
model on several engines (data parallel) are added up (KV-cache usage is averaged).

Emits ``vllm_requests_running``, ``vllm_requests_waiting``, ``vllm_kv_cache_usage_ratio``,
``vllm_prompt_tokens_per_second``, ``vllm_generation_tokens_per_second``,
``vllm_preemptions_per_second``, ``vllm_requests_finished_per_second{finished_reason}``,
``vllm_prefix_cache_hit_ratio``, ``vllm_ttft_seconds{quantile}``, ``vllm_itl_seconds{quantile}``,
``vllm_e2e_latency_seconds{quantile}``, ``vllm_queue_time_seconds{quantile}`` (all with
``server`` and ``model`` labels) and the common server series of :mod:`collectors.http`.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.records import HealthState, Labels, Record, Sample, labels_of
from collectors.http import DEFAULT_TIMEOUT_S, ServerAnswers, ServerCollector, SourceError, list_field
from collectors.prometheus import (
    Buckets,
    Scrape,
    bucket_increase,
    counter_increase,
    histogram_buckets,
    histogram_quantile,
    parse_scrape,
)

log = logging.getLogger(__name__)

__all__ = ["OpenAICompatCollector", "VllmCollector", "QUANTILES"]

QUANTILES = (0.5, 0.9, 0.99)

# (llmmon name, vLLM names newest first, how engines combine)
GAUGES = (
    ("vllm_requests_running", ("vllm:num_requests_running",), "sum"),
    ("vllm_requests_waiting", ("vllm:num_requests_waiting",), "sum"),
    ("vllm_kv_cache_usage_ratio", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), "mean"),
)
# (llmmon rate name, vLLM counter sample names newest first)
COUNTERS = (
    ("vllm_prompt_tokens_per_second", ("vllm:prompt_tokens_total",)),
    ("vllm_generation_tokens_per_second", ("vllm:generation_tokens_total",)),
    ("vllm_preemptions_per_second", ("vllm:num_preemptions_total",)),
    ("vllm_requests_finished_per_second", ("vllm:request_success_total",)),
)
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
HISTOGRAMS = (
    ("vllm_ttft_seconds", ("vllm:time_to_first_token_seconds",)),
    ("vllm_itl_seconds", ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")),
    ("vllm_e2e_latency_seconds", ("vllm:e2e_request_latency_seconds",)),
    ("vllm_queue_time_seconds", ("vllm:request_queue_time_seconds",)),
)
_KEPT_LABELS = ("model_name", "finished_reason")
# Only these families are parsed: the parser costs ~10 µs a line and a scrape has ~600.
WANTED_FAMILIES = tuple(sorted({name.removesuffix("_total") for _, names, *_ in (*GAUGES, *COUNTERS, *HISTOGRAMS)
                        for name in names} | {n.removesuffix("_total") for n in PREFIX_QUERIES + PREFIX_HITS}))


class OpenAICompatCollector(ServerCollector):
    """Any OpenAI-compatible server: models from ``/v1/models``, up/down, poll latency.

    Args:
        models_interval: seconds between reads of ``/v1/models`` where another request already
            tells whether the server is up (vLLM); here it is read on every poll.
    """

    kind = "openai"
    what = "an OpenAI-compatible server"

    @classmethod
    def recognise(cls, answers: ServerAnswers) -> bool:
        """A model list at ``/v1/models``, or a refusal there: an OpenAI-style API behind a key
        (the collector will say the key is missing)."""
        if answers.get("/v1/models").status in (401, 403):
            return True
        listing = answers.json("/v1/models")
        return isinstance(listing, dict) and isinstance(listing.get("data"), list)

    def __init__(self, base_url: str, name: str = "", interval: float = 1.0, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, models_interval: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(base_url, name, interval, api_key, timeout, clock)
        self.models_interval = models_interval
        self._models: dict[str, str] = {}
        self._models_due = 0.0

    def read(self, now: float) -> list[Record]:
        self._models = self.read_models()
        return self.models_loaded(now, self._models)

    def read_models(self) -> dict[str, str]:
        """``model id → description`` from ``/v1/models``."""
        data = list_field(self.source.get_json("/v1/models"), "data", self.what, "/v1/models")
        models: dict[str, str] = {}
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                length = entry.get("max_model_len")
                models[entry["id"]] = f"context {length} tokens" if isinstance(length, int) else ""
        return models

    def cached_models(self) -> dict[str, str]:
        """The models, re-read every ``models_interval`` seconds."""
        if time.monotonic() >= self._models_due:
            self._models_due = time.monotonic() + self.models_interval
            self._models = self.read_models()
        return self._models


@dataclass
class _Snapshot:
    """One scrape reduced to what windows and rates need, per output label set."""

    mono: float
    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    histograms: dict[tuple[str, Labels], Buckets] = field(default_factory=dict)

    def went_down_since(self, before: _Snapshot) -> bool:
        """True when any counter or histogram count is lower than in ``before``: a restart."""
        if any(v < before.counters.get(k, 0.0) for k, v in self.counters.items()):
            return True
        for key, buckets in self.histograms.items():
            old = before.histograms.get(key)
            if old and buckets and buckets[-1][1] < old[-1][1]:
                return True
        return False


def _first_present(names: tuple[str, ...], present: set[str]) -> str | None:
    return next((n for n in names if n in present), None)


class VllmCollector(OpenAICompatCollector):
    """A vLLM server.

    Args:
        window_s: the window of the latency percentiles and the prefix-cache hit ratio.
        (the others as :class:`OpenAICompatCollector`)
    """

    kind = "vllm"
    what = "a vLLM server"

    @classmethod
    def recognise(cls, answers: ServerAnswers) -> bool:
        """vLLM's ``/metrics`` has ``vllm:`` families."""
        return "vllm:" in answers.text("/metrics")

    def __init__(self, base_url: str, name: str = "", interval: float = 1.0, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, models_interval: float = 10.0, window_s: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(base_url, name, interval, api_key, timeout, models_interval, clock)
        self.window_s = window_s
        self.monotonic = monotonic
        self._history: deque[_Snapshot] = deque()
        self._version_read = False

    def read(self, now: float) -> list[Record]:
        self.source.get_ok("/health")  # a dead engine answers 500 here while /metrics still works
        answer = self.source.get("/metrics")
        if answer.status == 404:
            raise SourceError(HealthState.ERROR, "no /metrics endpoint: start vLLM without "
                                                 "--disable-log-stats, or add it as kind \"openai\"")
        if answer.status >= 400:
            answer = self.source.get_ok("/metrics")  # raises with the server's message
        if answer.looks_like_html:
            raise SourceError(HealthState.ERROR, f"not {self.what} (HTML page at /metrics)")
        try:
            scrape = parse_scrape(answer.text, prefix=WANTED_FAMILIES)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise SourceError(HealthState.ERROR, f"/metrics is not Prometheus text ({exc})"[:200]) from None
        if not scrape:
            raise SourceError(HealthState.ERROR, f"not {self.what} (/metrics has no vllm: metrics)")
        if not self._version_read:
            self._read_version()
        out = self.models_loaded(now, self.cached_models())
        out += self._samples(now, scrape)
        return out

    def _read_version(self) -> None:
        self._version_read = True
        try:
            payload = self.source.get_json("/version")
        except SourceError as exc:
            log.debug("%s: no version (%s)", self.name, exc.reason)
            return
        if isinstance(payload, dict) and isinstance(payload.get("version"), str):
            self.version = payload["version"]

    def _aggregate(self, scrape: Scrape, sample: str, how: str = "sum") -> dict[Labels, float]:
        """Values of one sample name per (model, finish reason), engines combined."""
        sums: dict[Labels, list[float]] = {}
        for (name, labels), value in scrape.items():
            if name != sample or not math.isfinite(value):
                continue
            key = tuple((k, v) for k, v in labels if k in _KEPT_LABELS)
            sums.setdefault(key, []).append(value)
        if how == "mean":
            return {k: sum(v) / len(v) for k, v in sums.items()}
        return {k: sum(v) for k, v in sums.items()}

    def _out_labels(self, key: Labels) -> Labels:
        found = dict(key)
        model = found.pop("model_name", "")
        return labels_of(found, server=self.name, model=model)

    def _samples(self, now: float, scrape: Scrape) -> list[Record]:
        out: list[Record] = []
        present = {name for name, _ in scrape}
        for metric, names, how in GAUGES:
            source = _first_present(names, present)
            if source:
                out += [Sample(metric, v, now, self._out_labels(k))
                        for k, v in self._aggregate(scrape, source, how).items()]

        snapshot = _Snapshot(self.monotonic())
        for metric, names in COUNTERS:
            source = _first_present(names, present)
            if source:
                for key, value in self._aggregate(scrape, source).items():
                    snapshot.counters[(metric, key)] = value
        for role, names in (("queries", PREFIX_QUERIES), ("hits", PREFIX_HITS)):
            source = _first_present(names, present)
            if source:
                for key, value in self._aggregate(scrape, source).items():
                    snapshot.counters[(role, key)] = value
        for metric, names in HISTOGRAMS:
            source = _first_present(tuple(n + "_bucket" for n in names), present)
            if source:
                grouped = histogram_buckets(scrape, source[: -len("_bucket")], keep=_KEPT_LABELS)
                for key, buckets in grouped.items():
                    snapshot.histograms[(metric, key)] = buckets

        previous = self._history[-1] if self._history else None
        if previous is not None and snapshot.went_down_since(previous):
            log.info("%s: counters went down, the server restarted", self.name)
            # Everything counted since the restart is new: start the window from zero.
            self._history = deque([_Snapshot(previous.mono)])
            previous = self._history[-1]
        self._history.append(snapshot)
        while len(self._history) > 2 and self._history[1].mono <= snapshot.mono - self.window_s:
            self._history.popleft()  # keep one snapshot at or before the window's start
        if previous is None:
            return out  # rates and windows need two scrapes
        out += self._rates(now, previous, snapshot)
        out += self._windows(now, self._history[0], snapshot)
        return out

    def _rates(self, now: float, previous: _Snapshot, current: _Snapshot) -> list[Record]:
        elapsed = current.mono - previous.mono
        if elapsed <= 0:
            return []
        out: list[Record] = []
        for (metric, key), value in current.counters.items():
            if metric in ("queries", "hits"):
                continue
            increase = counter_increase(previous.counters.get((metric, key), 0.0), value)
            out.append(Sample(metric, increase / elapsed, now, self._out_labels(key)))
        return out

    def _windows(self, now: float, base: _Snapshot, current: _Snapshot) -> list[Record]:
        out: list[Record] = []
        for (metric, key), buckets in current.histograms.items():
            window = bucket_increase(base.histograms.get((metric, key)), buckets)
            for q in QUANTILES:
                value = histogram_quantile(q, window)
                if value is not None:
                    out.append(Sample(metric, value, now, labels_of(dict(self._out_labels(key)), quantile=q)))
        for (role, key), queries in current.counters.items():
            if role != "queries":
                continue
            asked = counter_increase(base.counters.get(("queries", key), 0.0), queries)
            hits = counter_increase(base.counters.get(("hits", key), 0.0),
                                    current.counters.get(("hits", key), 0.0))
            if asked > 0:
                out.append(Sample("vllm_prefix_cache_hit_ratio", min(1.0, hits / asked), now,
                                  self._out_labels(key)))
        return out
