"""Session fixtures of the real-Prometheus tier: one Prometheus (scraping and evaluating every
second), and a fleet of two machines it scrapes:

* ``gpu-box-a``: a headless llmmon watching a simulated Ollama (a model partly offloaded to the
  CPU) and a simulated vLLM (one request waiting), with one user-defined alert rule;
* ``gpu-box-b``: a headless llmmon watching a real ``llama-server`` and metering it through its
  proxy.

Prometheus evaluates the rule file ``main.py rules --prometheus`` writes from gpu-box-a's rules.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.prometheus.agent import Agent
from tests.prometheus.prometheus import PrometheusServer
from tests.real_server.llama_server import LlamaServer, free_port
from tests.sim.ollama import SimOllama
from tests.sim.vllm import SimVllm

USER_RULE = """
# A rule of the user's own, with a "for": it must fire in llmmon and in Prometheus alike.
[[rule]]
name = "vllm_queue_nonempty"
title = "vLLM requests waiting"
metric = "vllm_requests_waiting"
aggregation = "max"
window = "10s"
op = ">"
threshold = 0
for = "3s"
cooldown = "1m"
severity = "info"
message = "{value:.0f} requests wait on {server}"
"""


@dataclass
class Fleet:
    a: Agent
    b: Agent
    ollama: SimOllama
    vllm: SimVllm
    llama: LlamaServer
    proxy_url: str       # gpu-box-b's metering proxy in front of llama-server
    rules: Path          # the Prometheus rule file written by `main.py rules --prometheus`

    def server(self, kind: str) -> str:
        """The ``server`` label of a machine's server: its identity, ``kind@host:port``, as each
        llmmon stores and exports it (the configured names are only what its window shows)."""
        port = {"ollama": self.ollama.port, "vllm": self.vllm.port, "llamacpp": self.llama.port}[kind]
        return f"{kind}@127.0.0.1:{port}"


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()


def machine_config(servers: list[tuple[str, str, str]], proxy: str = "") -> str:
    """A config.toml: no local discovery, these ``(url, kind, name)`` servers, a proxy route."""
    text = "[general]\ndiscover_local = false\n"
    for url, kind, name in servers:
        text += f'\n[[servers]]\nurl = "{url}"\nkind = "{kind}"\nname = "{name}"\n'
    return text + proxy


@pytest.fixture(scope="session")
def fleet(prometheus: PrometheusServer, llama_server: LlamaServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with SimOllama() as ollama, SimVllm("v0") as vllm:
        ollama.load(SimOllama.partially_offloaded_model())
        vllm.advance()  # the page taken under load: one request waiting
        a = Agent("gpu-box-a", tmp_path_factory.mktemp("gpu-box-a"), machine_config(
            [(ollama.url, "ollama", "ollama@gpu-box-a"), (vllm.url, "vllm", "vllm@gpu-box-a")]),
            extra_rules=USER_RULE)
        proxy_port = free_port()
        b = Agent("gpu-box-b", tmp_path_factory.mktemp("gpu-box-b"), machine_config(
            [(llama_server.base_url, "llamacpp", "llamacpp@gpu-box-b")],
            proxy=f'\n[proxy]\nenabled = true\ninclude_usage = true\n\n[[proxy.routes]]\nupstream = '
                  f'"{llama_server.base_url}"\nlisten = {proxy_port}\nkind = "llamacpp"\n'))
        try:
            a.start()
            b.start()
            rules = a.home / "llmmon-rules.yml"
            written = a.run("rules", "--prometheus", str(rules))
            assert written.returncode == 0, written.stderr
            prometheus.configure({a.name: a.address, b.name: b.address}, [rules])
            yield Fleet(a, b, ollama, vllm, llama_server, f"http://127.0.0.1:{proxy_port}", rules)
        finally:
            a.stop()
            b.stop()
