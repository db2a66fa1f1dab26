"""Live request figures: rates, tokens/s, percentiles and active requests, from the records the
proxy publishes through a real hub."""
from __future__ import annotations

import httpx
import pytest

from app.buffers import LiveBuffers
from app.hub import Hub
from app.proxy import ProxyServer
from app.records import RequestRecord, labels_of
from app.request_stats import RequestStats
from tests.sim.upstream import SimUpstream
from tests.support import wait_until
from tests.support.proxy import json_chunks

SERVER = "ollama@127.0.0.1:11434"


def record(end: float, latency: float = 1.0, **kw: object) -> RequestRecord:
    base = dict(ts_start=end - latency, server=SERVER, endpoint="/api/chat", model="llama3.2",
                status=200, stream=True, latency_s=latency, ttft_s=0.1, completion_tokens=10)
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def values(samples: list, name: str) -> dict:
    return {s.labels: s.value for s in samples if s.name == name}


def test_rates_errors_and_tokens_over_the_window() -> None:
    stats = RequestStats(lambda records: None, rate_window_s=10, quantile_window_s=60)
    now = 1_000.0
    stats([record(now - 1, server_tokens_per_s=42.0), record(now - 2, completion_tokens=30),
           record(now - 3, status=500, error_type="http", completion_tokens=None),
           record(now - 30)])  # outside the 10 s rate window
    samples = stats.compute(now)
    label = labels_of(server=SERVER)
    assert values(samples, "llm_requests_per_second") == {label: 3 / 10}
    assert values(samples, "llm_errors_per_second") == {label: 1 / 10}
    assert values(samples, "llm_error_ratio") == {label: pytest.approx(1 / 3)}
    assert values(samples, "llm_tokens_per_second") == {labels_of(server=SERVER, model="llama3.2"): 40 / 10}
    # Each finished request's own speed, once, at its end time.
    (speed,) = [s for s in samples if s.name == "llm_request_tokens_per_second"]
    assert (speed.value, speed.ts) == (42.0, now - 1)
    again = stats.compute(now + 1)
    assert values(again, "llm_requests_per_second") == {label: 3 / 10}
    assert values(again, "llm_request_tokens_per_second") == {}


def test_percentiles_cover_successful_requests_in_their_window() -> None:
    stats = RequestStats(lambda records: None, rate_window_s=10, quantile_window_s=60)
    now = 5_000.0
    stats([record(now - i, latency=float(i), ttft_s=i / 10) for i in range(1, 12)]
          + [record(now - 1, latency=99.0, status=502, error_type="upstream_down")]
          + [record(now - 120, latency=500.0)])  # too old
    samples = stats.compute(now)
    latency = values(samples, "llm_request_latency_seconds")
    assert latency[labels_of(server=SERVER, quantile="0.5")] == pytest.approx(6.0)
    assert latency[labels_of(server=SERVER, quantile="0.99")] == pytest.approx(10.9)
    ttft = values(samples, "llm_ttft_seconds")
    assert ttft[labels_of(server=SERVER, quantile="0.9")] == pytest.approx(1.0)
    # Nothing in the window: no percentile is invented, rates fall to zero.
    later = stats.compute(now + 1_000)
    assert values(later, "llm_request_latency_seconds") == {}
    assert values(later, "llm_requests_per_second") == {labels_of(server=SERVER): 0.0}


def test_a_request_that_never_reached_a_server_starts_no_series() -> None:
    """The proxy's 502 for a server that is not there: listed for the table, but no series for
    that server or for the model the client named; at a server that answered before, it counts
    as a failed request (the server's own series) and still names no model."""
    stats = RequestStats(lambda records: None, rate_window_s=10)
    now = 2_000.0
    absent = "ollama@127.0.0.1:11434"
    stats([record(now - 1, server=absent, model="gemma.gguf", status=502, error_type="upstream_down",
                  completion_tokens=None)])
    assert stats.compute(now) == []
    assert [r.server for r in stats.recent()[1]] == [absent]
    stats([record(now - 2), record(now - 1, model="typo", status=502, error_type="upstream_down",
                                   completion_tokens=None)])
    samples = stats.compute(now)
    assert {dict(s.labels)["server"] for s in samples} == {SERVER}
    assert values(samples, "llm_error_ratio") == {labels_of(server=SERVER): 0.5}
    assert set(values(samples, "llm_tokens_per_second")) == {labels_of(server=SERVER, model="llama3.2")}


def test_recent_keeps_newest_first_with_a_version() -> None:
    stats = RequestStats(lambda records: None, recent=3)
    v0, rows = stats.recent()
    assert rows == []
    stats([record(10.0 + i, model=f"m{i}") for i in range(5)])
    v1, rows = stats.recent()
    assert v1 != v0 and [r.model for r in rows] == ["m4", "m3", "m2"]


def test_live_figures_from_proxied_requests_reach_the_live_buffers() -> None:
    hub = Hub(store=None, buffers=LiveBuffers())
    stats = RequestStats(hub.publish, interval=0.05, rate_window_s=60)
    hub.subscribe(stats)
    usage = json_chunks("vllm_stream.sse")[-1]["usage"]
    with SimUpstream() as up:
        proxy = ProxyServer(up.url, publish=hub.publish, name="vllm@sim")
        proxy.start()
        stats.watch_active(proxy.name, lambda: proxy.active_requests)
        stats.start()
        try:
            active = ("llm_requests_active", labels_of(server="vllm@sim"))
            up.chunk_delay_s = 0.05
            with httpx.Client() as client:
                with client.stream("POST", proxy.url + "/v1/chat/completions",
                                   json={"model": "tiny-llama", "stream": True, "messages": [],
                                         "stream_options": {"include_usage": True}}) as r:
                    body = r.iter_raw()
                    next(body)
                    wait_until(lambda: hub.buffers.latest_value(*active) == 1.0, what="1 active request")
                    b"".join(body)
            wait_until(lambda: hub.buffers.latest_value(*active) == 0.0, what="0 active requests")
            tokens = ("llm_tokens_per_second", labels_of(server="vllm@sim", model="tiny-llama"))
            wait_until(lambda: hub.buffers.latest_value(*tokens) is not None, what="tokens/s")
            assert hub.buffers.latest_value(*tokens) == pytest.approx(usage["completion_tokens"] / 60)
            per_second = hub.buffers.latest_value("llm_requests_per_second", labels_of(server="vllm@sim"))
            assert per_second == pytest.approx(1 / 60)
            speed = hub.buffers.find("llm_request_tokens_per_second", server="vllm@sim")
            assert len(speed) == 1 and len(hub.buffers.window(speed[0])[0]) == 1
            assert hub.buffers.find("llm_ttft_seconds", server="vllm@sim")
        finally:
            stats.stop()
            proxy.stop()
