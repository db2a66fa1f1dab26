"""The vLLM / OpenAI-compatible collectors against a simulated vLLM (real HTTP on 127.0.0.1)
replaying recorded ``/metrics`` pages of the new (V1) and old (V0) metric names."""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from app.records import Health, HealthState, Sample
from collectors.vllm import OpenAICompatCollector, VllmCollector
from tests.sim.server import GARBAGE, HTML_PAGE, Reply
from tests.sim.vllm import SimVllm


@pytest.fixture
def vllm() -> Iterator[SimVllm]:
    with SimVllm("v1") as sim:
        yield sim


def ticking(step: float = 10.0):
    """A monotonic clock that advances ``step`` seconds per scrape: rates become exact."""
    ticks = itertools.count(start=1000.0, step=step)
    return lambda: next(ticks)


def values(records: list, name: str, **match: str) -> list[float]:
    return [r.value for r in records if isinstance(r, Sample) and r.name == name
            and all(dict(r.labels).get(k) == v for k, v in match.items())]


def one(records: list, name: str, **match: str) -> float:
    found = values(records, name, **match)
    assert len(found) == 1, (name, match, found)
    return found[0]


def health(records: list) -> Health:
    return next(r for r in records if isinstance(r, Health))


def test_new_names_gauges_rates_and_windowed_percentiles(vllm: SimVllm) -> None:
    collector = VllmCollector(vllm.url, monotonic=ticking(10.0))
    first = collector.poll()
    assert health(first).state == HealthState.UP and health(first).kind == "vllm"
    assert one(first, "vllm_requests_running", model="tiny-llama") == 0
    assert one(first, "vllm_kv_cache_usage_ratio", model="tiny-llama") == 0
    assert one(first, "llm_models_loaded") == 1 and one(first, "llm_model_loaded", model="tiny-llama") == 1
    assert not values(first, "vllm_generation_tokens_per_second")  # a rate needs two scrapes

    vllm.advance()  # 24 requests were served in the next 10 s
    second = collector.poll()
    # counters of the recordings: generation 0 → 2375, prompt 0 → 709, finished stop 9 / length 15
    assert one(second, "vllm_generation_tokens_per_second", model="tiny-llama") == pytest.approx(237.5)
    assert one(second, "vllm_prompt_tokens_per_second", model="tiny-llama") == pytest.approx(70.9)
    assert one(second, "vllm_requests_finished_per_second", finished_reason="stop") == pytest.approx(0.9)
    assert one(second, "vllm_requests_finished_per_second", finished_reason="length") == pytest.approx(1.5)
    # TTFT buckets of the window: 7 requests ≤ 0.1 s, all 24 ≤ 0.25 s (see test_collector_prometheus)
    assert one(second, "vllm_ttft_seconds", quantile="0.5") == pytest.approx(0.1 + 0.15 * 5 / 17)
    assert one(second, "vllm_ttft_seconds", quantile="0.99") == pytest.approx(0.1 + 0.15 * 16.76 / 17)
    for name in ("vllm_itl_seconds", "vllm_e2e_latency_seconds", "vllm_queue_time_seconds"):
        p50, p90, p99 = (one(second, name, quantile=q) for q in ("0.5", "0.9", "0.99"))
        assert 0 <= p50 <= p90 <= p99, name
    # 709 prefix-cache queries, 0 hits in the recording
    assert one(second, "vllm_prefix_cache_hit_ratio", model="tiny-llama") == 0.0
    assert all(dict(s.labels)["server"] == collector.name for s in second if isinstance(s, Sample))


def test_old_names_are_understood(tmp_path) -> None:
    with SimVllm("v0") as sim:
        collector = VllmCollector(sim.url, monotonic=ticking(10.0))
        collector.poll()
        sim.advance()
        records = collector.poll()
    model = "meta-llama/Llama-3.1-8B-Instruct"
    assert one(records, "vllm_kv_cache_usage_ratio", model=model) == 0.27      # gpu_cache_usage_perc
    assert one(records, "vllm_requests_running", model=model) == 3
    # gpu_prefix_cache_hits_total 6216 of gpu_prefix_cache_queries_total 19424
    assert one(records, "vllm_prefix_cache_hit_ratio", model=model) == pytest.approx(6216 / 19424)
    # time_per_output_token_seconds: 3519 ≤ 0.025 s, 8402 ≤ 0.05 s, 8549 in all
    # p50 rank 4274.5 → 0.025 + 0.025 × (4274.5 − 3519) / (8402 − 3519)
    assert one(records, "vllm_itl_seconds", model=model, quantile="0.5") == \
        pytest.approx(0.025 + 0.025 * 755.5 / 4883)
    assert one(records, "vllm_preemptions_per_second", model=model) == pytest.approx(0.2)


def test_restart_resets_counters_without_negative_rates(vllm: SimVllm) -> None:
    collector = VllmCollector(vllm.url, monotonic=ticking(10.0))
    collector.poll()
    vllm.advance()
    collector.poll()
    vllm.restart()  # counters back to the idle page's values
    after = collector.poll()
    rates = [r for r in after if isinstance(r, Sample) and r.name.endswith("_per_second")]
    assert rates and all(r.value >= 0 for r in rates)
    assert not values(after, "vllm_ttft_seconds")  # no requests since the restart: no percentiles
    vllm.advance()  # 24 requests after the restart
    again = collector.poll()
    assert one(again, "vllm_ttft_seconds", quantile="0.5") == pytest.approx(0.1 + 0.15 * 5 / 17)


def test_plain_openai_compatible_server(vllm: SimVllm) -> None:
    with SimVllm(metrics=False) as plain:
        records = OpenAICompatCollector(plain.url).poll()
        assert health(records).state == HealthState.UP and health(records).kind == "openai"
        assert one(records, "llm_model_loaded", model="tiny-llama") == 1
        state = health(VllmCollector(plain.url).poll())
        assert state.state == HealthState.ERROR and state.reason.startswith("no /metrics endpoint")


def test_dead_engine_is_an_error_with_vllms_words(vllm: SimVllm) -> None:
    collector = VllmCollector(vllm.url)
    collector.poll()
    vllm.kill_engine()
    state = health(collector.poll())
    assert state.state == HealthState.ERROR
    assert state.reason.startswith("HTTP 500: EngineCore encountered an issue")


def test_api_key_is_sent_as_bearer() -> None:
    with SimVllm(api_key="s3cret") as sim:
        refused = health(VllmCollector(sim.url).poll())
        assert refused.state == HealthState.ERROR
        assert refused.reason == "HTTP 401: Unauthorized (check the API key)"
        assert health(VllmCollector(sim.url, api_key="s3cret").poll()).state == HealthState.UP
        assert "s3cret" not in refused.reason


@pytest.mark.parametrize("answer, reason", [
    (GARBAGE, "not a vLLM server (/metrics has no vllm: metrics)"),
    (HTML_PAGE, "not a vLLM server (HTML page at /metrics)"),
    (Reply.text("vllm:num_requests_running{model_name=\"x"), "/metrics is not Prometheus text"),
    (Reply.text("# nothing here\n"), "not a vLLM server (/metrics has no vllm: metrics)"),
    (Reply.json({"detail": "boom"}, 503), "HTTP 503: boom"),
])
def test_broken_metrics_page_is_a_clear_error(vllm: SimVllm, answer: Reply, reason: str) -> None:
    vllm.route("/metrics", lambda _req: answer)
    state = health(VllmCollector(vllm.url).poll())
    assert state.state == HealthState.ERROR
    assert state.reason.startswith(reason), state.reason
