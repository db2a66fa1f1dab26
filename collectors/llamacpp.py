"""llama.cpp's own HTTP server (``llama-server``): health, model, slots and its Prometheus metrics.

Endpoints read on every poll: ``/health`` (up, or 503 while the model loads), ``/props`` (model
alias, context size per slot, number of slots, build), ``/slots`` (which slots are processing)
and ``/metrics`` (only when the server was started with ``--metrics``; without it the server
still counts as up and the reason says how to turn metrics on). An API key, when given, is sent
as a bearer token (llama-server's ``--api-key`` guards ``/props``, ``/slots`` and ``/metrics``).

Metric names (see docs/metrics.md), all with the label ``server``:
``llamacpp_prompt_tokens_total``, ``llamacpp_generation_tokens_total`` (the server's counters),
``llamacpp_prompt_tokens_per_second``, ``llamacpp_generation_tokens_per_second``,
``llamacpp_decode_calls_per_second`` (rates between two scrapes; a counter that went down
means the server restarted and counts from zero),
``llamacpp_requests_processing``, ``llamacpp_requests_deferred``, ``llamacpp_busy_slots``,
``llamacpp_slots_total``, ``llamacpp_model_context_length{model}`` (tokens per slot),
``llm_models_loaded``, ``llm_poll_latency_seconds``. A change of model gives
``model_unloaded``/``model_loaded`` events.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import httpx

from app.records import Event, Health, HealthState, Record, Sample, labels_of
from collectors.base import Collector
from collectors.prometheus import Scrape, counter_rate, parse_scrape

log = logging.getLogger(__name__)

# llama.cpp /metrics counter → (llmmon name of its raw value or None, llmmon name of its rate)
_COUNTERS = {
    "llamacpp:prompt_tokens_total": ("llamacpp_prompt_tokens_total", "llamacpp_prompt_tokens_per_second"),
    "llamacpp:tokens_predicted_total": ("llamacpp_generation_tokens_total",
                                        "llamacpp_generation_tokens_per_second"),
    "llamacpp:n_decode_total": (None, "llamacpp_decode_calls_per_second"),
}
_GAUGES = {
    "llamacpp:requests_processing": "llamacpp_requests_processing",
    "llamacpp:requests_deferred": "llamacpp_requests_deferred",
}


class Unusable(Exception):
    """The server answered, but with something we cannot use (HTML, truncated JSON, 401...)."""


class LlamaCppCollector(Collector):
    """One llama-server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``.
        name: the server's display name, the ``server`` label and the Health ``source``.
        interval: seconds between polls.
        api_key: the server's ``--api-key`` (read from the keyring by the caller), if any.
        timeout: seconds to wait for each answer.
        clock: wall clock for the records' timestamps; monotonic: the clock rates are timed by.
    """

    kind = "llamacpp"

    def __init__(self, base_url: str, name: str, interval: float = 1.0, api_key: str | None = None,
                 timeout: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.interval = interval
        self.clock = clock
        self.monotonic = monotonic
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Short timeouts: a hung server must not stall the poll loop or the app's shutdown.
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)))
        self._previous: tuple[float, Scrape] | None = None  # (monotonic time, last scrape)
        self._model = ""

    def poll(self) -> list[Record]:
        now = self.clock()
        started = time.perf_counter()
        try:
            return self._poll(now, started)
        except httpx.TransportError as exc:  # refused, timed out, reset: the server is not there
            self._previous = None  # no rate across an outage: the server may have restarted
            return [self._health(HealthState.DOWN, now, started, reason=_describe(exc))]
        except Unusable as exc:
            return [self._health(HealthState.ERROR, now, started, reason=str(exc))]

    def _poll(self, now: float, started: float) -> list[Record]:
        health = self._http.get("/health")
        if health.status_code == 503:  # alive, still loading its model: nothing else answers yet
            return [self._health(HealthState.UP, now, started, reason="loading model")]
        _check(health, "/health")

        props = _json(_check(self._http.get("/props"), "/props"), "/props")
        if not isinstance(props, dict):
            raise Unusable("/props: expected a JSON object")
        out: list[Record] = []
        add = self._adder(out, now)
        model = str(props.get("model_alias") or props.get("model_path") or "")
        out.extend(self._model_events(model, now))
        add("llm_models_loaded", 1.0 if model else 0.0)
        slots_total = props.get("total_slots")
        if isinstance(slots_total, (int, float)):
            add("llamacpp_slots_total", slots_total)
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if model and isinstance(n_ctx, (int, float)):
            add("llamacpp_model_context_length", n_ctx, model=model)

        notes: list[str] = []
        slots = self._http.get("/slots")
        if slots.status_code == 501:
            notes.append("no /slots: start llama-server with --slots")
        else:
            listed = _json(_check(slots, "/slots"), "/slots")
            if not isinstance(listed, list) or not all(isinstance(s, dict) for s in listed):
                raise Unusable("/slots: expected a list of slots")
            add("llamacpp_busy_slots", sum(1 for s in listed if s.get("is_processing")))

        metrics = self._http.get("/metrics")
        if metrics.status_code == 501:
            notes.append("no /metrics: start llama-server with --metrics")
        else:
            out.extend(self._metrics(_check(metrics, "/metrics").text, now))

        out.append(self._health(HealthState.UP, now, started, reason="; ".join(notes),
                                version=str(props.get("build_info") or "")))
        add("llm_poll_latency_seconds", time.perf_counter() - started)
        return out

    def _metrics(self, text: str, now: float) -> list[Record]:
        try:
            scrape = parse_scrape(text, prefix="llamacpp:")
        except ValueError as exc:
            raise Unusable(f"/metrics: not Prometheus text ({exc})") from exc
        mono = self.monotonic()
        previous, self._previous = self._previous, (mono, scrape)
        out: list[Record] = []
        add = self._adder(out, now)
        for source, (raw_name, rate_name) in _COUNTERS.items():
            value = scrape.get((source, ()))  # llama.cpp exports its metrics without labels
            if value is None:
                continue
            if raw_name:
                add(raw_name, value)
            before = previous[1].get((source, ())) if previous else None
            rate = counter_rate(before, value, mono - previous[0]) if before is not None else None
            if rate is not None:
                add(rate_name, rate)
        for source, name in _GAUGES.items():
            value = scrape.get((source, ()))
            if value is not None:
                add(name, value)
        return out

    def _model_events(self, model: str, now: float) -> list[Record]:
        previous, self._model = self._model, model
        if model == previous:
            return []
        events: list[Record] = []
        if previous:
            events.append(Event("model_unloaded", self.name, f"{previous} unloaded", now,
                                labels_of(server=self.name, model=previous)))
        if model:
            events.append(Event("model_loaded", self.name, f"{model} loaded", now,
                                labels_of(server=self.name, model=model)))
        return events

    def _adder(self, out: list[Record], now: float) -> Callable[..., None]:
        def add(name: str, value: float, **labels: object) -> None:
            out.append(Sample(name, float(value), now, labels_of(labels, server=self.name)))
        return add

    def _health(self, state: HealthState, now: float, started: float, reason: str = "",
                version: str = "") -> Health:
        return Health(self.name, state, now, reason=reason, kind=self.kind, url=self.base_url,
                      version=version, latency_s=time.perf_counter() - started)

    def close(self) -> None:
        self._http.close()


def _check(response: httpx.Response, path: str) -> httpx.Response:
    if response.status_code in (401, 403):
        raise Unusable(f"{path}: HTTP {response.status_code} — the API key is missing or wrong")
    if response.status_code != 200:
        raise Unusable(f"{path}: HTTP {response.status_code} {response.text[:120]!r}")
    return response


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise Unusable(f"{path}: not JSON ({exc})") from exc


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or unreachable ({exc})"
    return f"{type(exc).__name__}: {exc}"
