"""Writes ``metrics_v0_idle.txt`` and ``metrics_v0_after_40_requests.txt``: vLLM's ``/metrics``
with the OLD names (``gpu_cache_usage_perc``, ``gpu_prefix_cache_*``,
``time_per_output_token_seconds``), as the vLLM 0.9 line exposed them.

No vLLM of that age can run here, so this declares the same Prometheus metrics vLLM declared —
names, HELP texts, label names and bucket bounds copied from ``vllm/v1/metrics/loggers.py``
(``PrometheusStatLogger.__init__``, vllm-project/vllm, 0.9.x: labels ``model_name`` and
``engine``, before ``kv_cache_usage_perc`` existed) — records a deterministic set of requests into
them through ``prometheus_client`` (the library vLLM itself uses) and writes the exposition text.
Run from the repository root: ``.venv/bin/python tests/sim/recordings/vllm/make_metrics_v0.py``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

HERE = Path(__file__).resolve().parent
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MAX_MODEL_LEN = 8192
LABELS = ["model_name", "engine"]
VALUES = [MODEL, "0"]
FINISH_REASONS = ("stop", "length", "abort")
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0]
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]


def one_two_five(max_value: int) -> list[int]:
    out: list[int] = []
    exponent = 0
    while True:
        for m in (1, 2, 5):
            if m * 10 ** exponent > max_value:
                return out
            out.append(m * 10 ** exponent)
        exponent += 1


def build(requests: int, running: int, waiting: int, cache_usage: float) -> bytes:
    registry = CollectorRegistry()

    def gauge(name: str, doc: str) -> Gauge:
        return Gauge(name, doc, LABELS, registry=registry).labels(*VALUES)

    def counter(name: str, doc: str) -> Counter:
        return Counter(name, doc, LABELS, registry=registry).labels(*VALUES)

    def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, doc, LABELS, buckets=buckets, registry=registry).labels(*VALUES)

    gauge("vllm:num_requests_running", "Number of requests in model execution batches.").set(running)
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.").set(waiting)
    gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.").set(cache_usage)
    queries = counter("vllm:gpu_prefix_cache_queries", "GPU prefix cache queries, in terms of number of queried tokens.")
    hits = counter("vllm:gpu_prefix_cache_hits", "GPU prefix cache hits, in terms of number of cached tokens.")
    preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
    prompt = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
    generation = counter("vllm:generation_tokens", "Number of generation tokens processed.")
    success = Counter("vllm:request_success", "Count of successfully processed requests.",
                      LABELS + ["finished_reason"], registry=registry)
    by_reason = {r: success.labels(*VALUES, r) for r in FINISH_REASONS}
    prompt_hist = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                            one_two_five(MAX_MODEL_LEN))
    generation_hist = histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
                                one_two_five(MAX_MODEL_LEN))
    ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                     TTFT_BUCKETS)
    tpot = histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                     TPOT_BUCKETS)
    e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                    LATENCY_BUCKETS)
    queue = histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                      LATENCY_BUCKETS)

    rng = random.Random(9)  # deterministic: the same file on every run
    for i in range(requests):
        n_prompt, n_out = rng.randint(40, 900), rng.randint(20, 400)
        first, per_token, waited = rng.uniform(0.03, 0.6), rng.uniform(0.012, 0.045), rng.uniform(0.0, 0.4)
        prompt.inc(n_prompt)
        generation.inc(n_out)
        queries.inc(n_prompt)
        hits.inc(n_prompt // 2 if i % 3 else 0)
        by_reason["length" if i % 4 == 0 else "stop"].inc()
        prompt_hist.observe(n_prompt)
        generation_hist.observe(n_out)
        ttft.observe(first)
        for _ in range(n_out - 1):
            tpot.observe(per_token * rng.uniform(0.8, 1.25))
        e2e.observe(waited + first + per_token * (n_out - 1))
        queue.observe(waited)
    if requests:
        preemptions.inc(2)
    Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
          ["block_size", "cache_dtype", "enable_prefix_caching", "gpu_memory_utilization", "engine"],
          registry=registry).labels("16", "auto", "True", "0.9", "0").set(1)
    return generate_latest(registry)


if __name__ == "__main__":
    (HERE / "metrics_v0_idle.txt").write_bytes(build(0, 0, 0, 0.0))
    (HERE / "metrics_v0_after_40_requests.txt").write_bytes(build(40, 3, 1, 0.27))
