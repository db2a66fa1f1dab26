"""Property tests of the Prometheus text path: any bytes a server may answer at ``/metrics``.

The parser raises nothing but ``ValueError`` and keeps only finite values; counter increases are
never negative; and a real vLLM collector polling a simulated server (real HTTP) that serves
two arbitrary pages returns records whose values are finite, whose rates are never negative,
and which all pass the hub's bounds (:mod:`app.bounds`) or are dropped there with a count.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bounds import Bounds, bounded_value
from app.records import Event, Health, Record, Sample
from collectors.prometheus import counter_increase, histogram_buckets, histogram_quantile, parse_scrape
from collectors.vllm import VllmCollector
from tests.sim.vllm import SimVllm

NAMES = ["vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
         "vllm:generation_tokens_total", "vllm:request_success_total", "vllm:prefix_cache_queries_total",
         "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_bucket",
         "vllm:time_to_first_token_seconds_count"]
numbers = st.one_of(st.floats(), st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "-1e308", "-5e6", "1e400"]),
                    st.integers(-(2**70), 2**70))
label_values = st.one_of(st.sampled_from(["m", "+Inf", "0.1", "NaN", "-1"]),
                         st.text(st.characters(codec="utf-8"), max_size=20))


@st.composite
def metric_lines(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    labels = {"model_name": draw(label_values)}
    if name.endswith("_bucket"):
        labels["le"] = draw(label_values)
    if draw(st.booleans()):
        labels["finished_reason"] = draw(label_values)
    inner = ",".join(f'{k}="{v.replace(chr(92), "").replace(chr(34), "")}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {draw(numbers)}"


pages = st.one_of(
    st.binary(max_size=300),
    st.lists(metric_lines(), max_size=12).map(lambda lines: "\n".join(lines).encode()),
    st.lists(st.one_of(metric_lines(), st.text(max_size=30)), max_size=8).map(lambda lines: "\n".join(lines).encode()),
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), pages.map(lambda b: b.decode("utf-8", "replace"))))
def test_parse_raises_only_value_error_and_keeps_finite_values(text: str) -> None:
    try:
        scrape = parse_scrape(text)
    except ValueError:
        return
    assert all(math.isfinite(v) for v in scrape.values())
    for buckets in histogram_buckets(scrape, "vllm:time_to_first_token_seconds").values():
        q = histogram_quantile(0.5, buckets)
        assert q is None or math.isfinite(q)


@settings(max_examples=300, deadline=None)
@given(previous=st.floats(allow_nan=False), current=st.floats(allow_nan=False))
def test_counter_increase_is_never_negative(previous: float, current: float) -> None:
    assert counter_increase(previous, current) >= 0 or math.isnan(counter_increase(previous, current))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimVllm]:
    with SimVllm("v1") as server:
        yield server


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=pages, second=pages)
def test_vllm_collector_on_any_metrics_page_gives_finite_bounded_records(sim: SimVllm, first: bytes,
                                                                       second: bytes) -> None:
    sim.pages, sim.step = [first, second], 0  # type: ignore[list-item]  # bytes go out as they are
    ticks = itertools.count(1000.0, 10.0)
    collector = VllmCollector(sim.url, monotonic=lambda: next(ticks))
    try:
        records = collector.poll()  # never raises: a bad page is an ERROR health with a reason
        sim.step = 1
        records += collector.poll()
    finally:
        collector.close()
    assert all(isinstance(r, Health) for r in records if not isinstance(r, Sample))
    found = [r for r in records if isinstance(r, Sample)]
    for s in found:
        assert math.isfinite(s.value) and math.isfinite(s.ts), s
        if s.name.endswith("_per_second"):
            assert s.value >= 0, s  # a counter that went down is a restart, not a negative rate
    bounds = Bounds()
    offered: list[Record] = list(found)
    kept = [r for r in bounds.check(offered) if isinstance(r, Sample)]
    assert all(bounded_value(s.name, s.value) == (s.value, "") for s in kept)
    assert len(kept) + bounds.faults.total == len(found)  # what the bounds refuse is counted
    assert not [r for r in bounds.check(offered) if isinstance(r, Event)]  # no series flood here
