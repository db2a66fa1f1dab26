"""The proxy's routes follow the servers llmmon knows: a server discovery found gets a route on
its port + 1 (the next free port when that is taken), a server nobody configured or found gets
none, and the records of a route carry the server's identity."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from app.config import ProxyRoute, ServerEntry, Settings
from app.proxy.group import plan_routes
from app.runtime import Runtime
from collectors.discovery import DiscoveryCollector
from collectors.gpu import ServerRef
from tests.sim.upstream import SimUpstream
from tests.support import query, wait_until
from tests.support.ports import free_run
from tests.support.proxy import recorded_json


def discovering(db_file: Path, port: int) -> Runtime:
    """The app's core whose discovery looks at ``port`` only (as it looks at 8080 for a user)."""
    settings = Settings(system_interval_s=60)
    return Runtime.create(db_file, settings, collectors=[
        DiscoveryCollector(settings, ports=((port, "llama.cpp"),), interval=0.5)])


@pytest.fixture
def server_with_free_neighbour() -> Iterator[SimUpstream]:
    """A simulated OpenAI-compatible server on a port whose + 1 is free."""
    with SimUpstream(port=free_run(3)) as up:
        yield up


def test_a_discovered_server_gets_a_route_on_its_port_plus_one(db_file: Path, server_with_free_neighbour) -> None:
    """The issue's case: only a discovered server, no [[servers]] entry. The switch offers no
    route to an Ollama that is not there, then the discovered server's route, and a request
    through it is recorded under that server's identity with the server's counts."""
    up = server_with_free_neighbour
    runtime = discovering(db_file, up.port)
    try:
        assert runtime.proxies is not None and runtime.proxies.status() == []  # nothing known yet
        assert runtime.switch_proxy(True) == ""  # on before anything is found: it waits
        assert runtime.proxies.on and not runtime.proxies.running
        runtime.start()
        wait_until(lambda: any(s.running for s in runtime.proxies.status()), what="the discovered server's route")
        (route,) = runtime.proxies.status()
        identity = f"openai@127.0.0.1:{up.port}"
        assert (route.name, route.upstream, route.listen) == (identity, up.url, f"http://127.0.0.1:{up.port + 1}")
        client = openai.OpenAI(base_url=f"{route.listen}/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(model="gemma.gguf", messages=[{"role": "user", "content": "hi"}])
        assert answer.usage is not None
        wait_until(lambda: query(db_file, "SELECT count(*) FROM requests")[0][0] == 1, what="the request row")
    finally:
        runtime.stop()
    usage = recorded_json("vllm_chat.json")["usage"]
    assert query(db_file, "SELECT server, status, prompt_tokens, completion_tokens, error_type FROM requests") == [
        (identity, 200, usage["prompt_tokens"], usage["completion_tokens"], "")]
    assert answer.usage.completion_tokens == usage["completion_tokens"]


def test_a_taken_port_plus_one_moves_the_route_to_the_next_free_port(db_file: Path) -> None:
    first = free_run(3)
    with SimUpstream(port=first) as up, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first + 1))   # another program has port + 1
        squatter.listen()
        runtime = discovering(db_file, up.port)
        try:
            runtime.start()
            runtime.switch_proxy(True)
            wait_until(lambda: any(s.running for s in runtime.proxies.status()), what="the route")
            (route,) = runtime.proxies.status()
            assert route.listen == f"http://127.0.0.1:{first + 2}" and route.error == ""
            client = openai.OpenAI(base_url=f"{route.listen}/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model="m", messages=[])
            wait_until(lambda: query(db_file, "SELECT count(*) FROM requests")[0][0] == 1, what="the request row")
        finally:
            runtime.stop()


def test_routes_for_configured_and_found_servers() -> None:
    """Configured servers and found ones each get one; a server's port and other routes'
    ports are never chosen; an entry in [[proxy.routes]] decides its upstream's address."""
    settings = Settings(servers=[ServerEntry("http://localhost:8080"), ServerEntry("http://gpu-box:8000", kind="vllm")])
    found = [ServerRef("llamacpp@127.0.0.1:8080", "http://127.0.0.1:8080", "llamacpp"),
             ServerRef("llamacpp@127.0.0.1:8081", "http://127.0.0.1:8081", "llamacpp"),
             ServerRef("ollama@127.0.0.1:11434", "http://127.0.0.1:11434", "ollama")]
    routes = plan_routes(settings, found, free=lambda host, port: True)
    assert [(r.upstream, r.listen_port, r.kind) for r in routes] == [
        ("http://127.0.0.1:8080", 8082, "llamacpp"),   # 8081 is another server's port
        ("http://gpu-box:8000", 8001, "vllm"),          # a remote server's port takes nothing here
        ("http://127.0.0.1:8081", 8083, "llamacpp"),   # 8082 is the first route's
        ("http://127.0.0.1:11434", 11435, "ollama")]
    settings.proxy.routes = [ProxyRoute("http://127.0.0.1:11434", 21434)]
    routes = plan_routes(settings, found, keep=routes, free=lambda host, port: True)
    assert [(r.upstream, r.listen_port) for r in routes] == [
        ("http://127.0.0.1:11434", 21434), ("http://127.0.0.1:8080", 8082), ("http://gpu-box:8000", 8001),
        ("http://127.0.0.1:8081", 8083)]
    settings.proxy.routes_only = True   # main.py proxy --upstream: that route alone
    assert plan_routes(settings, found) == settings.proxy.routes
    assert plan_routes(Settings(), []) == []   # no server known: no route, no Ollama guess


def test_a_server_keeps_its_port_while_it_stays_free() -> None:
    """Routes do not move when a server found later would have wanted the same port."""
    settings = Settings()
    a = ServerRef("openai@127.0.0.1:9000", "http://127.0.0.1:9000", "openai")
    b = ServerRef("openai@127.0.0.1:8999", "http://127.0.0.1:8999", "openai")
    before = plan_routes(settings, [a], free=lambda host, port: True)
    after = plan_routes(settings, [b, a], keep=before, free=lambda host, port: True)
    assert {r.upstream: r.listen_port for r in after} == {"http://127.0.0.1:9000": 9001,
                                                          "http://127.0.0.1:8999": 9002}
