"""What the servers' own counters saw in a session: the real vLLM and llama.cpp collectors poll
simulated servers serving recorded /metrics pages into a real store (on an injected clock, so
every scrape interval is exactly what the rates were timed over), and the totals match what
the recorded counters say happened."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage.server_counts import session_server_counts
from app.storage.sessions import list_sessions
from app.storage.store import Store
from collectors.llamacpp import LlamaCppCollector
from collectors.vllm import VllmCollector
from tests.sim.llamacpp import SimLlamaServer
from tests.sim.llamacpp import page as llama_page
from tests.sim.vllm import SimVllm, page
from tests.support.clock import FakeClock
from tests.support.polling import counter_sum, poll_into


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "counts.db")
    s.start()
    yield s
    s.close()


def counts_now(store: Store, clock: FakeClock):
    store.flush()
    conn = store.reader()
    try:
        session = next(s for s in list_sessions(conn, clock.t) if s.recording)
        return session_server_counts(conn, session.id, session.started, None, clock.t)
    finally:
        conn.close()


def test_vllm_requests_and_tokens_from_its_counters(store: Store) -> None:
    idle, busy = page("metrics_v1_idle.txt"), page("metrics_v1_after_24_requests.txt")
    served = counter_sum(busy, "vllm:request_success_total") - counter_sum(idle, "vllm:request_success_total")
    tokens = sum(counter_sum(busy, n) - counter_sum(idle, n)
                 for n in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"))
    assert served > 0 and tokens > 0
    clock = FakeClock(time.time())
    with SimVllm() as sim:
        collector = VllmCollector(sim.url, name="vllm@sim", clock=clock, monotonic=clock)
        poll_into(store, collector, clock, 3)
        assert counts_now(store, clock).requests == 0  # idle: the server counted nothing yet
        sim.advance()  # requests served between two scrapes
        poll_into(store, collector, clock, 3)
        collector.close()
    counts = counts_now(store, clock)
    assert counts.requests == served and counts.tokens == tokens
    assert counts.request_servers == ("vllm@sim",) and counts.requests_estimated


def test_llamacpp_tokens_from_its_raw_counters_restart_included(store: Store) -> None:
    one_batch = sum(counter_sum(llama_page("metrics_after"), n) - counter_sum(llama_page("metrics"), n)
                    for n in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"))
    assert one_batch > 0
    clock = FakeClock(time.time())
    with SimLlamaServer() as sim:
        collector = LlamaCppCollector(sim.url, name="llama.cpp@sim", clock=clock, monotonic=clock)
        poll_into(store, collector, clock, 2)
        sim.advance()   # a batch of requests
        poll_into(store, collector, clock, 2)
        sim.restart()   # counters back to zero
        poll_into(store, collector, clock, 2)
        sim.advance()   # and the same batch again
        poll_into(store, collector, clock, 2)
        collector.close()
    counts = counts_now(store, clock)
    assert counts.tokens == 2 * one_batch and not counts.tokens_estimated
    assert counts.token_servers == ("llama.cpp@sim",)
    assert counts.requests is None  # llama.cpp's /metrics has no request counter


def test_a_session_without_server_counters_has_none(store: Store) -> None:
    counts = counts_now(store, FakeClock(time.time()))
    assert (counts.requests, counts.tokens) == (None, None)
