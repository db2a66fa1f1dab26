"""llama.cpp's own HTTP server (``llama-server``): health, model, slots and its Prometheus metrics.

Every poll reads ``/health`` (up, or 503 while the model loads), ``/props`` (model alias,
context size per slot, number of slots, build, and whether ``/slots`` and ``/metrics`` are
enabled), ``/slots`` (which slots are processing) and ``/metrics``. A server started without
``--metrics`` or with ``--no-slots`` is still up; the health reason tells the user which flag
gives the missing figures. llama-server's ``--api-key`` guards ``/props``, ``/slots`` and
``/metrics``: the key is sent as a bearer token (:class:`~collectors.http.HttpSource`).

Emits, all with the label ``server``: ``llamacpp_prompt_tokens_total``,
``llamacpp_generation_tokens_total`` (the server's own counters; prompt tokens exclude those
served from its cache), ``llamacpp_prompt_tokens_per_second``,
``llamacpp_generation_tokens_per_second``, ``llamacpp_decode_calls_per_second`` (rates between
two scrapes; a counter that went down means a restart and counts from zero),
``llamacpp_requests_processing``, ``llamacpp_requests_deferred``, ``llamacpp_busy_slots``,
``llamacpp_slots_total``, ``llamacpp_model_context_length{model}`` (tokens per slot), and the
common ``llm_models_loaded``, ``llm_model_loaded``, ``llm_poll_latency_seconds``
(:mod:`collectors.http`).
"""
from __future__ import annotations

import time
from typing import Callable

from app.records import Health, HealthState, Record, Sample, labels_of
from collectors.http import DEFAULT_TIMEOUT_S, ServerCollector, SourceError
from collectors.prometheus import Scrape, counter_rate, parse_scrape

__all__ = ["LlamaCppCollector"]

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


class LlamaCppCollector(ServerCollector):
    """One llama-server.

    Args:
        monotonic: the clock rates are timed by (tests inject one to check rates exactly).
        (the others as :class:`~collectors.http.ServerCollector`)
    """

    kind = "llamacpp"
    what = "a llama.cpp server"

    def __init__(self, base_url: str, name: str = "", interval: float = 1.0, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(base_url, name, interval, api_key, timeout, clock)
        self.monotonic = monotonic
        self._previous: tuple[float, Scrape] | None = None  # (monotonic time, last scrape)
        self._note = ""  # why some figures are missing although the server is up

    def read(self, now: float) -> list[Record]:
        self._note = ""
        health = self.source.get("/health")
        if health.status == 503:
            self._note = "loading model"  # alive; nothing else answers until the model is in
            return []
        if health.status != 200:
            raise SourceError(HealthState.ERROR, f"HTTP {health.status} at /health")
        props = self.source.get_json("/props")
        if not isinstance(props, dict):
            raise SourceError(HealthState.ERROR, f"not {self.what} (/props is not an object)")
        self.version = str(props.get("build_info") or "")
        out: list[Record] = []
        add = self._adder(out, now)
        model = str(props.get("model_alias") or props.get("model_path") or "")
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        has_ctx = isinstance(n_ctx, (int, float)) and not isinstance(n_ctx, bool)
        out += self.models_loaded(now, {model: f"{n_ctx} tokens per slot" if has_ctx else ""}
                                  if model else {})
        if model and has_ctx:
            add("llamacpp_model_context_length", n_ctx, model=model)
        if isinstance(props.get("total_slots"), int):
            add("llamacpp_slots_total", props["total_slots"])

        missing = []
        if props.get("endpoint_slots", True):
            slots = self.source.get_json("/slots")
            if not isinstance(slots, list) or not all(isinstance(s, dict) for s in slots):
                raise SourceError(HealthState.ERROR, f"not {self.what} (/slots is not a list of slots)")
            add("llamacpp_busy_slots", sum(1 for s in slots if s.get("is_processing")))
        else:
            missing.append("busy slots need llama-server --slots")
        if props.get("endpoint_metrics", True):
            out += self._metrics(self.source.get_ok("/metrics").text, now)
        else:
            missing.append("token counters need llama-server --metrics")
        self._note = "; ".join(missing)
        return out

    def _metrics(self, text: str, now: float) -> list[Record]:
        try:
            scrape = parse_scrape(text, prefix="llamacpp:")
        except ValueError as exc:
            raise SourceError(HealthState.ERROR, f"/metrics is not Prometheus text ({exc})"[:200]) from None
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

    def _adder(self, out: list[Record], now: float) -> Callable[..., None]:
        def add(name: str, value: float, **labels: object) -> None:
            out.append(Sample(name, float(value), now, labels_of(labels, server=self.name)))
        return add

    def health(self, now: float, state: HealthState, reason: str, latency: float) -> Health:
        if state == HealthState.UP and not reason:
            reason = self._note
        return super().health(now, state, reason, latency)
