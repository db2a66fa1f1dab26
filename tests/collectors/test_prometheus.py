"""Counter rates and windowed histogram quantiles, checked against values worked out by hand
from two real scrapes of a vLLM server (tests/sim/recordings/vllm/)."""
from __future__ import annotations

import math

import pytest

from collectors.prometheus import (
    bucket_increase,
    counter_increase,
    counter_rate,
    histogram_buckets,
    histogram_quantile,
    parse_scrape,
)
from tests.sim.vllm import page

TTFT = "vllm:time_to_first_token_seconds"
MODEL = (("model_name", "tiny-llama"),)


def ttft_window() -> list[tuple[float, float]]:
    idle = histogram_buckets(parse_scrape(page("metrics_v1_idle.txt")), TTFT, keep=["model_name"])
    after = histogram_buckets(parse_scrape(page("metrics_v1_after_24_requests.txt")), TTFT, keep=["model_name"])
    return bucket_increase(idle[MODEL], after[MODEL])


def test_window_of_two_real_scrapes_gives_the_hand_computed_percentiles() -> None:
    window = ttft_window()
    # The recording: 0 requests at or under 0.08 s, 7 under 0.1 s, all 24 under 0.25 s.
    assert dict(window)[0.08] == 0 and dict(window)[0.1] == 7 and dict(window)[0.25] == 24
    assert window[-1] == (math.inf, 24)
    # p50: rank 12 lies in (0.1, 0.25] holding requests 8..24 → 0.1 + 0.15 × (12 − 7) / 17
    assert histogram_quantile(0.5, window) == pytest.approx(0.1 + 0.15 * 5 / 17)
    # p90: rank 21.6 → 0.1 + 0.15 × 14.6 / 17;  p99: rank 23.76 → 0.1 + 0.15 × 16.76 / 17
    assert histogram_quantile(0.9, window) == pytest.approx(0.1 + 0.15 * 14.6 / 17)
    assert histogram_quantile(0.99, window) == pytest.approx(0.1 + 0.15 * 16.76 / 17)


def test_a_window_uses_the_difference_not_the_totals() -> None:
    # Two scrapes: 10 old fast requests (≤ 0.1 s), then 10 new slow ones (0.5–1 s).
    before = [(0.1, 10.0), (0.5, 10.0), (1.0, 10.0), (math.inf, 10.0)]
    after = [(0.1, 10.0), (0.5, 10.0), (1.0, 20.0), (math.inf, 20.0)]
    window = bucket_increase(before, after)
    assert histogram_quantile(0.5, window) == pytest.approx(0.75)   # 0.5 + 0.5 × 5/10
    assert histogram_quantile(0.5, after) == pytest.approx(0.1)     # the cumulative totals would say fast


def test_counter_reset_never_gives_a_negative_rate() -> None:
    idle = parse_scrape(page("metrics_v1_idle.txt"))
    busy = parse_scrape(page("metrics_v1_after_24_requests.txt"))
    key = ("vllm:generation_tokens_total", (("engine", "0"), ("model_name", "tiny-llama")))
    assert counter_rate(idle[key], busy[key], 10.0) == pytest.approx(2375 / 10)
    # The server restarts: its counter is back near zero. The increase is what it counted since.
    assert counter_increase(busy[key], idle[key]) == idle[key] >= 0
    assert counter_rate(busy[key], 12.0, 2.0) == 6.0
    assert counter_rate(1.0, 2.0, 0.0) is None


def test_histogram_reset_counts_everything_since_the_restart() -> None:
    before = [(0.1, 50.0), (math.inf, 60.0)]
    after_restart = [(0.1, 1.0), (math.inf, 3.0)]
    assert bucket_increase(before, after_restart) == after_restart
    assert all(count >= 0 for _, count in bucket_increase(before, after_restart))


def test_quantile_edge_cases() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None          # no observations
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 4.0)]) == 0.1           # all above the top bound
    assert histogram_quantile(0.5, [(0.1, 4.0), (0.2, 4.0)]) is None               # no +Inf: total unknown
    assert histogram_quantile(1.5, [(0.1, 4.0), (math.inf, 4.0)]) is None


def test_parser_rejects_garbage_and_keeps_only_the_prefix() -> None:
    with pytest.raises(ValueError):
        parse_scrape("<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(ValueError):
        parse_scrape('vllm:num_requests_running{model_name="x} 1')
    scrape = parse_scrape(page("metrics_v1_after_24_requests.txt"), prefix="vllm:")
    assert scrape and all(name.startswith("vllm:") for name, _ in scrape)
    assert scrape == {k: v for k, v in parse_scrape(page("metrics_v1_after_24_requests.txt")).items()
                      if k[0].startswith("vllm:")}
