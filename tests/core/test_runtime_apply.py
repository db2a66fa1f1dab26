"""Runtime.apply: saved settings take effect in the running app without a restart — the proxy
switch and routes (real HTTP through the proxy), retention (old rows deleted at once), servers
added and removed (collectors start and stop), poll intervals."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx

from app.config import ProxyRoute, ServerEntry, Settings
from app.records import Sample
from app.runtime import Runtime
from app.server_names import server_name
from collectors.http import ServerCollector
from collectors.system import SystemCollector
from tests.sim.ollama import SimOllama
from tests.sim.upstream import SimUpstream
from tests.sim.vllm import SimVllm
from tests.support import count, free_port, query, wait_until

DAY = 86400.0


def generate(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/api/generate", timeout=5,
                      json={"model": "llama3.2", "prompt": "hi", "stream": False})


def test_the_proxy_switch_and_its_routes_apply_while_running(db_file: Path) -> None:
    with SimUpstream() as up:
        port, moved = free_port(), free_port()
        off = Settings(discover_local=False)
        off.proxy.routes = [ProxyRoute(up.url, port, kind="ollama")]
        runtime = Runtime.create(db_file, off)
        try:
            runtime.start()
            assert runtime.proxies is not None and not runtime.proxies.running
            on = copy.deepcopy(off)
            on.proxy.enabled = True
            assert runtime.apply(on) == []
            assert generate(port).status_code == 200
            wait_until(lambda: count(db_file, "requests") == 1, what="the proxied request recorded")

            elsewhere = copy.deepcopy(on)
            elsewhere.proxy.routes = [ProxyRoute(up.url, moved, kind="ollama")]
            runtime.apply(elsewhere)
            assert generate(moved).status_code == 200
            try:
                generate(port)
            except httpx.ConnectError:
                pass
            else:
                raise AssertionError("the old route still listens")

            switched_off = copy.deepcopy(elsewhere)
            switched_off.proxy.routes[0].enabled = False  # the route's own switch
            runtime.apply(switched_off)
            assert runtime.proxies.status() == []
            runtime.apply(copy.deepcopy(off))
            assert not runtime.proxies.running
        finally:
            runtime.stop()


def test_new_retention_limits_delete_old_data_at_once(db_file: Path) -> None:
    runtime = Runtime.create(db_file, Settings(discover_local=False, retention_days=None))
    try:
        runtime.start()
        now = time.time()
        runtime.hub.publish([Sample("test_value", 1.0, now - 10 * DAY), Sample("test_value", 2.0, now - 1)])
        runtime.store.flush()
        assert query(db_file, "SELECT count(*) FROM samples s JOIN series ON series.id = s.series_id "
                              "WHERE name = 'test_value'") == [(2,)]
        runtime.apply(Settings(discover_local=False, retention_days=5, retention_gb=2))
        assert (runtime.store.retention_days, runtime.store.retention_max_bytes) == (5, 2_000_000_000)
        wait_until(lambda: query(db_file, "SELECT count(*) FROM samples s JOIN series ON series.id = s.series_id "
                                          "WHERE name = 'test_value'") == [(1,)], what="the 10-day-old sample deleted")
        assert runtime.settings.retention_days == 5  # what the Sessions tab's preview reads
    finally:
        runtime.stop()


def test_servers_added_and_removed_start_and_stop_being_watched(db_file: Path) -> None:
    with SimOllama() as ollama, SimVllm() as vllm:
        laptop, lab = server_name("ollama", ollama.url), server_name("vllm", vllm.url)  # their identities
        first = Settings(discover_local=False, servers=[ServerEntry(ollama.url, name="laptop")])
        runtime = Runtime.create(db_file, first)
        try:
            runtime.start()
            health = runtime.hub.health
            wait_until(lambda: laptop in health, what="the configured Ollama watched")
            second = Settings(discover_local=False, server_interval_s=0.4, system_interval_s=0.5,
                              servers=[ServerEntry(vllm.url, name="lab")])
            runtime.apply(second)
            # Discovery scans again at once (its own interval is 30 s): the new server shows within seconds.
            wait_until(lambda: lab in health, timeout=10, what="the added vLLM watched")
            assert laptop not in health
            names = {c.name: c for c in runtime.hub.scheduler.collectors}
            assert laptop not in names and names[lab].interval == 0.4
            assert all(c.interval == 0.5 for c in names.values() if isinstance(c, SystemCollector))
            assert [c.name for c in names.values() if isinstance(c, ServerCollector)] == [lab]
            assert runtime.display_name(lab) == "lab"  # the new settings name it
            polled = len([r for r in ollama.requests if r.path == "/api/ps"])
            lab_polls = len([r for r in vllm.requests if r.path == "/metrics"])
            wait_until(lambda: len([r for r in vllm.requests if r.path == "/metrics"]) >= lab_polls + 3,
                       what="three more polls of lab")
            assert len([r for r in ollama.requests if r.path == "/api/ps"]) <= polled + 1  # one may have been under way
        finally:
            runtime.stop()
