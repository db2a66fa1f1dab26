"""Polling a real collector into a real store on an injected clock: each poll exactly one
second after the last, for sample stamps and rate timing alike, so what the rates sum to is
exactly what the server's counters say (no scheduling jitter)."""
from __future__ import annotations

from collectors.prometheus import parse_scrape
from tests.support.clock import FakeClock


def poll_into(store, collector, clock: FakeClock, times: int) -> None:
    """Poll ``times`` times, one second apart, queueing what each poll returns in ``store``
    (``clock`` is the collector's ``clock=`` and ``monotonic=``)."""
    for _ in range(times):
        clock.advance(1.0)
        store.put(collector.poll())


def counter_sum(text: str, name: str) -> float:
    """The sum of every series of counter ``name`` in a Prometheus page."""
    return sum(v for (n, _labels), v in parse_scrape(text).items() if n == name)
