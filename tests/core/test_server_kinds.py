"""The server-kind table is what every part reads: its entries are consistent, and one more line
(a kind with its collector) is enough for discovery, the proxy's names, the proxy CLI, the
header figures and the prompt test to know the new kind."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app import server_kinds
from app.buffers import LiveBuffers
from app.config import ServerEntry, Settings
from app.prompt_runner import PromptRequest, PromptTarget, request_for
from app.proxy import cli, server_label
from app.records import Health, HealthState, Sample, labels_of
from app.server_kinds import KINDS, Api, OwnFigures, ServerKind, kind_for_port, server_kind
from app.summary import summarize
from collectors.discovery import DiscoveryCollector, collector_class, identify
from collectors.http import ServerAnswers
from collectors.llamacpp import LlamaCppCollector
from tests.sim.server import Reply, Route, SimServer

LLAMASERVER = Path(__file__).parents[1] / "sim" / "recordings" / "llamaserver"


class ForkCollector(LlamaCppCollector):
    """A llama.cpp fork with its own name: llama-server's API, told apart by a ``/fork`` page."""

    kind = "fork"
    what = "a llama.cpp fork"

    @classmethod
    def recognise(cls, answers: ServerAnswers) -> bool:
        return answers.get("/fork").status == 200


FORK = ServerKind("fork", "Fork", 30000, f"{__name__}:ForkCollector", Api.OLLAMA,
                  figures=OwnFigures(tokens_per_second="llamacpp_generation_tokens_per_second"))


def fork_server() -> SimServer:
    """llama-server's recorded answers, plus the page that marks the fork."""
    def recorded(name: str, content_type: str) -> Route:
        return lambda _r: Reply.text((LLAMASERVER / name).read_bytes(), content_type=content_type)
    routes = {f"/{name}": recorded(name, "application/json") for name in ("props", "health", "slots")}
    routes["/metrics"] = recorded("metrics", "text/plain; version=0.0.4")
    routes["/fork"] = lambda _r: Reply.json({"fork": True})
    return SimServer(routes)


def test_every_entry_names_a_collector_of_its_own_kind() -> None:
    assert len({k.id for k in KINDS}) == len(KINDS)
    ports = [k.default_port for k in KINDS if k.default_port is not None]
    assert len(set(ports)) == len(ports)
    for kind in KINDS:
        assert collector_class(kind).kind == kind.id
    assert KINDS[-1].id == server_kinds.GENERIC  # the catch-all is asked last


def test_lookups_fall_back_to_the_generic_kind() -> None:
    assert kind_for_port(11434).id == "ollama" and kind_for_port(8001).id == "openai"
    assert server_kind("vllm").display_name == "vLLM" and server_kind("sglang").id == "openai"
    assert server_label("http://127.0.0.1:8080") == "llamacpp@127.0.0.1:8080"
    assert server_label("http://10.0.0.2:9999", "vllm") == "vllm@10.0.0.2:9999"


def test_one_line_in_the_table_is_a_new_kind_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_kinds, "KINDS", (FORK, *KINDS))  # the one line
    with fork_server() as fork, fork_server() as also:
        assert identify(fork.url).kind == "fork"
        discovery = DiscoveryCollector(Settings(discover_local=False, servers=[ServerEntry(url=fork.url)]))
        discovery.poll()
        (collector,) = discovery.new_collectors()
        assert isinstance(collector, ForkCollector) and collector.name == f"fork@127.0.0.1:{fork.port}"
        health = next(r for r in collector.poll() if isinstance(r, Health))
        assert (health.state, health.kind) == (HealthState.UP, "fork")
        collector.close()
        assert (30000, "Fork") in DiscoveryCollector(Settings()).ports
        # with its line gone it is llama.cpp again
        monkeypatch.setattr(server_kinds, "KINDS", KINDS)
        assert identify(also.url).kind == "llamacpp"
        monkeypatch.setattr(server_kinds, "KINDS", (FORK, *KINDS))

    assert server_label("http://127.0.0.1:30000") == "fork@127.0.0.1:30000"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--kind", "fork"]).kind == "fork"

    now = 1_700_000_000.0
    buffers = LiveBuffers()
    buffers.add([Sample("llamacpp_generation_tokens_per_second", 42.0, now, labels_of(server="fork@x:1"))])
    summary = summarize(buffers, {"fork@x:1": Health("fork@x:1", HealthState.UP, now, kind="fork")}, now)
    assert (summary.servers_up, summary.servers_total, summary.tokens_per_s) == (1, 1, 42.0)

    path, body = request_for(PromptTarget("fork@x:1", "http://x:1", "fork", "m"), PromptRequest("hi"))
    assert path == "/api/chat" and body["messages"] == [{"role": "user", "content": "hi"}]
