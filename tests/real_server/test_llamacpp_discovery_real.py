"""Discovery recognises a real llama-server and watches it with the llama.cpp collector."""
from __future__ import annotations

from app.config import ServerEntry, Settings
from app.records import HealthState
from collectors.discovery import DiscoveryCollector, identify
from collectors.llamacpp import LlamaCppCollector
from tests.real_server.llama_server import LlamaServer
from tests.support import health_of


def test_a_configured_llama_server_is_found_and_watched(llama_server: LlamaServer) -> None:
    assert identify(llama_server.base_url).kind == "llamacpp"
    discovery = DiscoveryCollector(Settings(discover_local=False, servers=[ServerEntry(url=llama_server.base_url)]))
    discovery.poll()
    (collector,) = discovery.new_collectors()
    assert isinstance(collector, LlamaCppCollector)
    assert collector.name == f"llamacpp@127.0.0.1:{llama_server.port}"
    assert health_of(collector.poll()).state == HealthState.UP
    collector.close()
