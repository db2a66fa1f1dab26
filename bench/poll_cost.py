"""CPU cost of one polling round of every collector, against baselines measured in the same run.

Each collector polls simulated servers (real HTTP on 127.0.0.1, recorded payloads) in this
process; the CPU time counted is the polling thread's own (``time.thread_time``), so the
simulated servers' work is not charged to the collectors. Baselines: a bare ``httpx`` GET of the
same ``/metrics`` page (the floor of any HTTP poll) and the foundation's ``SystemCollector``.

    .venv/bin/python bench/poll_cost.py [--rounds 200]

Target (docs/architecture.md, "Performance bars"): the whole app idle with all collectors at
1 s ≤ 2 % of one core.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from app.config import Settings  # noqa: E402
from collectors.discovery import DiscoveryCollector  # noqa: E402
from collectors.gpu import GpuCollector, ServerRef  # noqa: E402
from collectors.ollama import OllamaCollector  # noqa: E402
from collectors.prometheus import parse_scrape  # noqa: E402
from collectors.system import SystemCollector  # noqa: E402
from collectors.vllm import WANTED_FAMILIES, VllmCollector  # noqa: E402
from tests.sim.ollama import SimOllama  # noqa: E402
from tests.sim.vllm import SimVllm, page  # noqa: E402


def cpu_ms(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm up: connections, caches, first-poll priming
    out = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        out.append((time.thread_time() - start) * 1000)
    return out


def row(name: str, samples: list[float], base: float) -> float:
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[18]
    print(f"| {name} | {median:.3f} | {p95:.3f} | {median / base:.1f}× |")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    with SimOllama() as ollama, SimVllm() as vllm:
        ollama.load(SimOllama.partially_offloaded_model())
        vllm.advance()  # the page with filled histograms: the heaviest to parse
        client = httpx.Client(base_url=vllm.url)
        bare = cpu_ms(lambda: client.get("/metrics").content, rounds)
        text = page("metrics_v1_after_24_requests.txt")
        ollama_c = OllamaCollector(ollama.url)
        vllm_c = VllmCollector(vllm.url)
        servers = [ServerRef(ollama_c.name, ollama.url, "ollama"), ServerRef(vllm_c.name, vllm.url, "vllm")]
        gpu_fast = GpuCollector(servers=lambda: servers, process_interval=1e9)
        ticks = iter(range(0, 10**9, 10))  # every poll 10 s after the last: always a slow tick
        gpu_slow = GpuCollector(servers=lambda: servers, process_interval=5.0, monotonic=lambda: next(ticks))
        system = SystemCollector()
        discovery = DiscoveryCollector(Settings(), probe_timeout=0.5)

        print(f"CPU ms per poll, median of {rounds} (thread CPU time), same run:\n")
        print("| what | median ms | p95 ms | × bare GET |")
        print("| --- | --- | --- | --- |")
        base = row("baseline: bare httpx GET of the same /metrics page", bare, statistics.median(bare))
        row("parse the whole /metrics page (no prefix filter)", cpu_ms(lambda: parse_scrape(text), rounds), base)
        row("parse with the `vllm:` prefix filter", cpu_ms(lambda: parse_scrape(text, "vllm:"), rounds), base)
        row("parse only the families the collector reads",
            cpu_ms(lambda: parse_scrape(text, WANTED_FAMILIES), rounds), base)
        per_tick = {
            "SystemCollector (foundation, baseline)": row("SystemCollector (foundation)",
                                                          cpu_ms(system.poll, rounds), base),
            "OllamaCollector": row("OllamaCollector (/api/ps; tags every 30 s)", cpu_ms(ollama_c.poll, rounds), base),
            "VllmCollector": row("VllmCollector (/health + /metrics, rates, windows)",
                                 cpu_ms(vllm_c.poll, rounds), base),
            "GpuCollector": row("GpuCollector, 1 s tick (no GPU here; 2 server process trees)",
                                cpu_ms(gpu_fast.poll, rounds), base),
        }
        slow = row("GpuCollector, slow tick (refresh the server process trees), every 5 s",
                   cpu_ms(gpu_slow.poll, max(10, rounds // 10)), base)
        scan = row("DiscoveryCollector scan of the 4 default ports, every 30 s",
                   cpu_ms(discovery.poll, max(10, rounds // 10)), base)
        client.close()
        for c in (ollama_c, vllm_c, gpu_fast, gpu_slow):
            c.close()
    round_ms = sum(per_tick.values())
    per_second = round_ms + slow / 5 + scan / 30
    print(f"\nOne full round (system + Ollama + vLLM + GPU): {round_ms:.2f} ms CPU "
          f"= {round_ms / per_tick['SystemCollector (foundation, baseline)']:.1f}× the SystemCollector alone.")
    print(f"At 1 s intervals with the slow GPU tick every 5 s and a discovery scan every 30 s: "
          f"{per_second:.2f} ms CPU per second = {per_second / 10:.2f} % of one core (target ≤ 2 % for the whole app).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
