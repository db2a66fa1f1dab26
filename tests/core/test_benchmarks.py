"""Benchmarks against the simulated streaming server (recorded Ollama answers over real HTTP),
measured by the prompt test's meter: one stored row per repeat, their spread, one request at a
time or several at once, cancelling, an unreachable server, energy split over overlapping
repeats; and the comparison's verdict on differences."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.benchmarks.prompts import BenchPrompt
from app.benchmarks.records import BenchmarkConfig, BenchResult, benchmark_results, find_benchmark, list_benchmarks
from app.benchmarks.runner import BenchmarkRun
from app.benchmarks.stats import compare, summarize, verdict
from app.hub import Hub
from app.prompt_runner import PromptTarget
from app.records import Sample, labels_of
from app.storage.store import Store
from app.usage.energy import split_equally
from tests.sim.upstream import DEFAULT_ROUTES, SimUpstream, chunks_of
from tests.support import count, query, wait_until

PROMPTS = (BenchPrompt("Why is the sky blue?"), BenchPrompt("Write a haiku.", system="Be brief."))


@pytest.fixture
def upstream():
    with SimUpstream() as sim:
        yield sim


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "bench.db")
    s.start()
    yield s
    s.close()


def targets(url: str, *models: str) -> tuple[PromptTarget, ...]:
    return tuple(PromptTarget("ollama@sim", url, "ollama", m) for m in models)


def run(config: BenchmarkConfig, store: Store) -> BenchmarkRun:
    hub = Hub(store)
    bench = BenchmarkRun(config, hub.publish, store)
    bench.start()
    bench.join(60)
    assert not bench.running
    store.flush()
    return bench


def test_repeats_give_one_stored_row_each_and_a_spread(upstream: SimUpstream, store: Store) -> None:
    upstream.chunk_delay_s = 0.01
    config = BenchmarkConfig("baseline", targets(upstream.url, "llama3.2", "mistral"), PROMPTS, repeat=3)
    bench = run(config, store)

    assert bench.status == "done" and len(bench.results) == 2 * 2 * 3 == len(upstream.requests)
    conn = store.reader()
    stored = benchmark_results(conn, bench.benchmark_id)
    assert [(r.model, r.prompt_index, r.repeat, r.ttft_s, r.tokens_per_s) for r in stored] == \
        [(r.model, r.prompt_index, r.repeat, r.ttft_s, r.tokens_per_s) for r in bench.results]
    # one at a time, each repeat through every model before the next repeat
    assert [r.model for r in stored[:4]] == ["llama3.2", "mistral"] * 2
    assert [r.repeat for r in stored] == sorted(r.repeat for r in stored)
    for before, after in zip(upstream.requests, upstream.requests[1:], strict=False):
        assert after.received_at >= before.write_times[-1]
    # the recorded Ollama answer carries the server's own counts
    final = json.loads(chunks_of(DEFAULT_ROUTES["/api/chat"][0])[-1])
    assert {(r.prompt_tokens, r.completion_tokens) for r in stored} == {(final["prompt_eval_count"],
                                                                          final["eval_count"])}
    for summary in summarize(stored):
        assert summary.runs == 6 and summary.errors == 0
        assert summary.ttft is not None and summary.ttft.n == 6
        assert summary.ttft.p10 <= summary.ttft.median <= summary.ttft.p90
        assert summary.ttft.median == pytest.approx(float(np.median(
            [r.ttft_s for r in stored if r.model == summary.model])))
    assert query(store.path, "SELECT count(*), min(source) FROM requests") == [(12, "benchmark")]
    info = find_benchmark(conn, "baseline")
    assert (info.status, info.config.repeat, info.config.targets[0].api_key) == ("done", 3, None)
    assert [b.id for b in list_benchmarks(conn)] == [bench.benchmark_id]


def test_several_at_once_overlap_and_share_the_energy(upstream: SimUpstream, store: Store) -> None:
    """Constant 200 W from a GPU power series recorded while the run goes: the repeats' energy
    adds up to 200 W times the time any repeat ran, and overlapping ones are marked shared."""
    upstream.hang = True  # the first three wait together until all three arrived
    stop = threading.Event()

    def power() -> None:  # what the GPU collector would record meanwhile
        while not stop.wait(0.05):
            store.put([Sample("gpu_power_watts", 200.0, time.time(), labels_of(gpu="0"))])
    recorder = threading.Thread(target=power, daemon=True)
    recorder.start()
    def recorded() -> bool:
        store.flush()
        return count(store.path, "samples") > 0
    wait_until(recorded, what="the first power reading")
    try:
        config = BenchmarkConfig("together", targets(upstream.url, "a", "b", "c"), PROMPTS[:1], repeat=2,
                                 concurrency=3)
        hub = Hub(store)
        bench = BenchmarkRun(config, hub.publish, store)
        bench.start()
        wait_until(lambda: len(upstream.requests) == 3, what="three requests at once")
        upstream.hang = False
        upstream.release()
        bench.join(60)
        store.flush()
    finally:
        stop.set()
        recorder.join()
    assert bench.status == "done" and len(upstream.requests) == 6
    results = benchmark_results(store.reader(), bench.benchmark_id)
    assert len(results) == 6 and all(r.energy_j is not None and r.energy_source == "gpu_power" for r in results)
    starts, ends = np.array([r.ts_start for r in results]), np.array([r.end for r in results])
    union = split_equally(starts, ends)[0].sum()
    assert sum(r.energy_j for r in results) == pytest.approx(200.0 * union, rel=1e-6)
    assert any(r.energy_shared for r in results)


def test_cancelling_keeps_what_was_measured_and_marks_the_run(upstream: SimUpstream, store: Store) -> None:
    config = BenchmarkConfig("cancelled", targets(upstream.url, "m"), PROMPTS[:1], repeat=5)
    hub = Hub(store)
    finished = threading.Event()
    bench = BenchmarkRun(config, hub.publish, store, on_finished=lambda _run: finished.set())
    bench.start()
    wait_until(lambda: len(bench.results) == 2, what="two repeats")
    upstream.hang = True  # the third one hangs until cancelled
    wait_until(lambda: len(upstream.requests) == 3, what="the third request")
    bench.cancel()
    assert finished.wait(20)
    store.flush()
    assert bench.status == "cancelled" and len(bench.results) == 2
    assert find_benchmark(store.reader(), "cancelled").status == "cancelled"
    assert len(benchmark_results(store.reader(), bench.benchmark_id)) == 2


def test_an_unreachable_server_gives_error_rows_not_a_crash(store: Store) -> None:
    config = BenchmarkConfig("nobody", targets("http://127.0.0.1:9", "m"), PROMPTS[:1], repeat=2)
    bench = run(config, store)
    assert bench.status == "done"
    assert [r.error_type for r in bench.results] == ["upstream_down", "upstream_down"]
    (summary,) = summarize(bench.results)
    assert (summary.runs, summary.errors, summary.ttft) == (2, 2, None)


# --------------------------------------------------------------------------- comparing
def results(speeds: list[float], model: str = "m") -> list[BenchResult]:
    return [BenchResult(float(i), "s", model, 0, i, ttft_s=10.0 / v, tokens_per_s=v) for i, v in enumerate(speeds)]


def test_a_real_slowdown_is_beyond_the_noise_and_a_reshuffle_is_not() -> None:
    rng = np.random.default_rng(1)
    before = list(rng.normal(100, 2, 10))
    (slower,) = compare(results(before), results(list(rng.normal(80, 2, 10))))
    assert slower.tokens_per_s is not None and slower.tokens_per_s.beyond_noise
    assert slower.tokens_per_s.change == pytest.approx(float(np.median(slower.b.values["tokens_per_s"]))
                                                       / float(np.median(before)) - 1)
    assert verdict(slower.tokens_per_s) == "worse, beyond the noise"
    assert verdict(slower.ttft) == "worse, beyond the noise"  # TTFT went up: worse too
    (same,) = compare(results(before), results(list(rng.permutation(before))))
    assert same.tokens_per_s is not None and same.tokens_per_s.beyond_noise is False
    (few,) = compare(results(before[:2]), results(before[2:4]))
    assert few.tokens_per_s is not None and verdict(few.tokens_per_s) == "too few repeats to tell"
    only = compare(results(before), results(before, model="other"))
    assert {c.key: c.tokens_per_s for c in only} == {"m": None, "other": None}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 1e6), min_size=0, max_size=12), st.lists(st.floats(0.01, 1e6), max_size=12))
def test_a_comparison_never_fails_and_its_verdict_matches_its_interval(a: list[float], b: list[float]) -> None:
    for c in compare(results(a), results(b)):
        d = c.tokens_per_s
        if d is not None and d.beyond_noise is not None:
            assert d.low is not None and d.high is not None and d.low <= d.high
            assert d.beyond_noise == (d.low > 0 or d.high < 0)
