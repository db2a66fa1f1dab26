"""A machine's llmmon restarts: its request counters start again from zero, and Prometheus'
counter-reset handling counts the requests of both runs in increase()/rate()."""
from __future__ import annotations

from pathlib import Path

from tests.prometheus.agent import Agent
from tests.prometheus.conftest import machine_config
from tests.prometheus.prometheus import PrometheusServer
from tests.prometheus.test_scrape import chat
from tests.real_server.llama_server import LlamaServer, free_port
from tests.support import query, wait_until


def test_request_counter_across_an_agent_restart(prometheus: PrometheusServer, llama_server: LlamaServer,
                                                 tmp_path: Path) -> None:
    proxy_port = free_port()
    agent = Agent("restart-box", tmp_path, machine_config(
        [(llama_server.base_url, "llamacpp", "llamacpp@restart-box")],
        proxy=f'\n[proxy]\nenabled = true\n\n[[proxy.routes]]\nupstream = "{llama_server.base_url}"\n'
              f'listen = {proxy_port}\nkind = "llamacpp"\n')).start()
    proxy = f"http://127.0.0.1:{proxy_port}"
    series = 'llm_requests_total{instance="restart-box"}'
    others = dict(prometheus.targets)
    try:
        prometheus.configure({**others, agent.name: agent.address})
        # Fewer requests after the restart than before: a counter that restarts and passes its
        # old value before the first scrape cannot be told from one that just grew.
        chat(proxy, 3)
        wait_until(lambda: prometheus.value(f"sum({series})") == 3, timeout=20, what="3 requests in Prometheus")
        agent.restart()
        chat(proxy, 2)
        wait_until(lambda: prometheus.value(f"sum({series})") == 2, timeout=20,
                   what="the restarted agent's 2 requests (its counter starts from zero)")
        raw = prometheus.query(f"{series}[2m]")
        assert len(raw) == 1, raw  # one label set: status 200, model tiny
        values = [float(v) for _, v in raw[0]["values"]]
        assert values[values.index(3.0) + 1] < 3.0 and values[-1] == 2.0  # the drop Prometheus sees
        assert prometheus.value(f"sum(resets({series}[2m]))") == 1.0
        # Prometheus counts the drop as a reset, not as -2: at least the 5 - first-sample
        # requests it saw happen (it may extrapolate a little beyond its first and last samples)
        increase = prometheus.value(f"sum(increase({series}[2m]))")
        assert increase >= 5 - values[0]
        assert prometheus.value(f"sum(rate({series}[2m]))") > 0
        # llmmon's own record of both runs (the store commits within a second)
        wait_until(lambda: query(agent.db, "SELECT count(*), count(DISTINCT session_id) FROM requests") == [(5, 2)],
                   timeout=10, what="5 requests over 2 sessions in the agent's database")
    finally:
        agent.stop()
        prometheus.configure(others)
