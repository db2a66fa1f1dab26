"""Cost of alerting: one evaluation of the shipped rules over a busy machine's series, against
the baseline of only reading the same windows from the live buffers (what any evaluation must
do), and the rule editor's "test against the last hour" replay.

    .venv/bin/python bench/alerts.py
"""
from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.alerts.engine import AlertEngine, replay  # noqa: E402
from app.alerts.rules import DEFAULT_RULES_PATH, load_rules  # noqa: E402
from app.buffers import LiveBuffers  # noqa: E402
from app.records import Sample, labels_of  # noqa: E402

HOUR = 3600


def busy_machine(now: float) -> LiveBuffers:
    """An hour at 1 Hz of every series the default rules watch: 4 GPUs, 3 servers × 4 models,
    8 disks — 87 series in all."""
    buffers = LiveBuffers()
    series: list[tuple[str, dict[str, str]]] = [("system_cpu_percent", {}), ("system_memory_percent", {})]
    series += [(n, {"gpu": str(g)}) for g in range(4) for n in ("gpu_temperature_celsius", "gpu_memory_percent")]
    series += [("system_disk_percent", {"mount": f"/d{i}"}) for i in range(8)]
    for s in range(3):
        server = f"vllm@10.0.0.{s}:8000"
        series += [("llmmon_source_up", {"source": server, "kind": "vllm"}),
                   ("llm_error_ratio", {"server": server}),
                   ("llm_ttft_seconds", {"server": server, "quantile": "0.95"})]
        for m in range(4):
            labels = {"server": server, "model": f"m{m}"}
            series += [(n, labels) for n in ("llm_request_tokens_per_second", "vllm_requests_waiting",
                                             "vllm_kv_cache_usage_ratio", "ollama_model_gpu_share_ratio",
                                             "vllm_ttft_seconds")]
    for name, labels in series:
        key = labels_of(labels)
        buffers.add(Sample(name, 50.0 + (i % 7), now - HOUR + i, key) for i in range(HOUR))
    return buffers


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()``."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    now = time.time()
    buffers = busy_machine(now)
    rules = load_rules(DEFAULT_RULES_PATH).rules
    engine = AlertEngine(buffers, rules)
    engine.evaluate(now)

    def read_only() -> None:  # the floor: fetch each rule's series windows, compute nothing
        for rule in rules:
            for key in buffers.keys(rule.metric):
                buffers.window(key, now - max(rule.window, rule.baseline.window if rule.baseline else 0))

    tick = timed(lambda: engine.evaluate(now), 50)
    floor = timed(read_only, 50)
    n_series = len(buffers.keys())
    print(f"series: {n_series}, rules: {len(rules)}")
    print(f"one evaluation of the default rules: {tick * 1000:.2f} ms "
          f"(reading the windows alone: {floor * 1000:.2f} ms, ratio {tick / floor:.2f}x)")
    print(f"share of one core at the 1 s tick: {tick * 100:.2f} %")
    cpu = next(r for r in rules if r.name == "cpu_busy")
    drop = next(r for r in rules if r.name == "tokens_per_second_drop")
    for rule in (cpu, drop):
        t = timed(functools.partial(replay, rule, buffers, now - HOUR, now), 3)
        print(f"replay of {rule.name} over the last hour (5 s steps, "
              f"{len([k for k in buffers.keys(rule.metric) if rule.matches(k[1])])} series): {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
