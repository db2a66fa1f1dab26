"""Discovery: which kind of server answers where, collectors started for each (with the API
key from the keyring), servers that appear later, and a GUI start that never waits for probes."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from app.collector import Collector
from app.config import ServerEntry, Settings
from app.hub import Hub
from app.records import Event, Health, HealthState
from app.server_kinds import GENERIC, KINDS
from app.server_names import display_name
from collectors.discovery import DiscoveryCollector, Probe, identify, normalise_url
from collectors.ollama import OllamaCollector
from collectors.vllm import OpenAICompatCollector, VllmCollector
from tests.sim.ollama import SimOllama
from tests.sim.server import HANG, HTML_PAGE, Reply, Route, SimServer
from tests.sim.vllm import SimVllm
from tests.support import wait_until
from tests.support.keyring_memory import MemoryKeyring

LLAMASERVER = Path(__file__).parents[1] / "sim" / "recordings" / "llamaserver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llamaserver(metrics: bool = True) -> SimServer:
    """llama-server's recorded /props, /health (and /metrics) answers."""
    def recorded(name: str) -> Route:
        return lambda _r: Reply.text((LLAMASERVER / name).read_bytes(), content_type="application/json")
    routes = {f"/{name}": recorded(name) for name in ("props", "health", "slots")}
    if metrics:
        routes["/metrics"] = lambda _r: Reply.text((LLAMASERVER / "metrics").read_bytes())
    return SimServer(routes)


def test_each_kind_is_identified() -> None:
    with SimOllama() as ollama, SimVllm() as vllm, SimVllm(metrics=False) as plain, \
            llamaserver() as lcp, llamaserver(metrics=False) as lcp_plain, SimServer() as web:
        web.set_fault(HTML_PAGE)
        assert identify(ollama.url).kind == "ollama"
        assert identify(vllm.url).kind == "vllm"
        assert identify(plain.url).kind == "openai"
        assert identify(lcp.url).kind == "llamacpp"
        assert identify(lcp_plain.url).kind == "llamacpp"   # started without --metrics: /props tells
        # vLLM's and llama.cpp's probes both read /metrics: the server is asked once
        assert [r.path for r in lcp_plain.requests] == ["/api/version", "/metrics", "/props"]
        assert identify(web.url) == Probe(web.url, "", "not an LLM server (an HTML page)", HealthState.ERROR)
    port = free_port()
    refused = identify(f"http://127.0.0.1:{port}")
    assert (refused.kind, refused.reason, refused.state) == ("", f"connection refused on :{port}", HealthState.DOWN)


def test_probe_of_a_hanging_port_gives_up_quickly() -> None:
    with SimServer() as hung:
        hung.set_fault(HANG)
        probe = identify(hung.url, timeout=0.3)
    assert (probe.kind, probe.reason) == ("", "timed out after 0.3 s")


def test_servers_found_get_collectors_with_keys_and_the_missing_are_explained(
        memory_keyring: MemoryKeyring) -> None:
    memory_keyring.set_password("llmmon", "box-vllm", "s3cret")
    down_port = free_port()
    with SimOllama() as ollama, SimVllm(api_key="s3cret") as vllm:
        settings = Settings(discover_local=True, servers=[
            ServerEntry(url=vllm.url.replace("127.0.0.1", "localhost") + "/", name="box", api_key_ref="box-vllm"),
            ServerEntry(url=f"http://127.0.0.1:{down_port}", kind="auto")])
        discovery = DiscoveryCollector(settings, ports=((ollama.port, "Ollama"),))
        records = discovery.poll()
        added: list[Collector] = discovery.new_collectors()
        by_kind = {type(c): c for c in added}
        assert set(by_kind) == {OllamaCollector, VllmCollector}
        assert by_kind[OllamaCollector].name == f"ollama@127.0.0.1:{ollama.port}"
        # a configured name is what the user reads; the label stays the server's identity
        assert by_kind[VllmCollector].name == f"vllm@127.0.0.1:{vllm.port}"
        assert display_name(by_kind[VllmCollector].name, settings) == "box"
        # the key from the keyring reached the collector: the guarded server lets it in
        assert next(r for r in by_kind[VllmCollector].poll() if isinstance(r, Health)).state == HealthState.UP
        assert [e.kind for e in records if isinstance(e, Event)] == ["server_found", "server_found"]
        down = next(r for r in records if isinstance(r, Health) and r.kind == "server")
        assert (down.state, down.reason) == (HealthState.DOWN, f"connection refused on :{down_port}")
        summary = next(r for r in records if isinstance(r, Health) and r.source == "discovery").reason
        assert summary.startswith("found ") and f"connection refused on :{down_port}" in summary
        assert {s.name for s in discovery.servers()} == {by_kind[OllamaCollector].name, by_kind[VllmCollector].name}

        assert not [r for r in discovery.poll() if isinstance(r, Event)]  # nothing new: no duplicates
        assert discovery.new_collectors() == []  # each collector is handed over once

    # the configured server starts later: picked up by a later scan
    with SimOllama(port=down_port):
        records = discovery.poll()
    assert [type(c) for c in discovery.new_collectors()] == [OllamaCollector]
    assert [e.message for e in records if isinstance(e, Event)] == [
        f"found ollama server ollama@127.0.0.1:{down_port}"]


def test_a_kind_llmmon_does_not_know_is_watched_as_openai_compatible() -> None:
    with llamaserver() as lcp:
        discovery = DiscoveryCollector(Settings(discover_local=False, servers=[
            ServerEntry(url=lcp.url, kind="sglang")]))
        discovery.poll()
        added = discovery.new_collectors()
    assert [type(c) for c in added] == [OpenAICompatCollector]
    assert added[0].name == f"openai@127.0.0.1:{lcp.port}"


def test_only_the_kinds_asked_for_are_recognised() -> None:
    """Without vLLM's entry in the table, a vLLM server (which also answers /v1/models) is
    taken for the generic OpenAI-compatible kind: the table is what discovery knows."""
    generic = tuple(k for k in KINDS if k.id == GENERIC)
    with SimVllm() as vllm:
        assert identify(vllm.url).kind == "vllm"
        assert identify(vllm.url, kinds=generic).kind == "openai"
        discovery = DiscoveryCollector(Settings(discover_local=True), ports=None, kinds=generic)
    assert discovery.ports == ((1234, "OpenAI-compatible server"),)


def test_explicit_kind_is_not_probed() -> None:
    port = free_port()
    discovery = DiscoveryCollector(Settings(discover_local=False, servers=[
        ServerEntry(url=f"http://127.0.0.1:{port}", kind="vllm", name="later")]))
    discovery.poll()
    # watched at once (the collector will report it down until it starts)
    assert [(type(c), c.name) for c in discovery.new_collectors()] == [(VllmCollector, f"vllm@127.0.0.1:{port}")]
    assert normalise_url("LOCALHOST:8000/") == "http://127.0.0.1:8000"


def test_start_never_waits_for_probes_and_found_servers_report_through_the_hub() -> None:
    with SimOllama() as ollama, SimServer() as hung:
        hung.set_fault(HANG)
        settings = Settings(discover_local=False, servers=[ServerEntry(url=ollama.url), ServerEntry(url=hung.url)])
        hub = Hub(store=None)
        discovery = DiscoveryCollector(settings, probe_timeout=20.0)
        hub.add_collectors([discovery])
        hub.start()
        try:
            wait_until(lambda: any(r.path == "/api/version" for r in hung.requests), what="the probe")
            assert "discovery" not in hub.health   # the probe is still waiting, start() was not
            hung.stop()                              # the hanging port gives up: the scan completes
            name = f"ollama@127.0.0.1:{ollama.port}"
            wait_until(lambda: name in hub.health and hub.health[name].state == HealthState.UP,
                       what="the Ollama collector's first poll")
            assert hub.health[name].version == "0.12.6"
        finally:
            assert hub.stop() == []


@pytest.mark.parametrize("url", ["http://[::1]:11434", "127.0.0.1:11434", "http://localhost:11434/"])
def test_urls_are_normalised(url: str) -> None:
    assert normalise_url(url) == "http://127.0.0.1:11434"
