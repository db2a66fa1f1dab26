"""A route switched off in the settings (``enabled = false``) is not run, and its server gets no
automatic route in its place; the other servers keep theirs."""
from __future__ import annotations

from app.config import ProxyRoute, ServerEntry, Settings
from app.proxy.group import plan_routes


def test_a_route_switched_off_is_not_run_nor_replaced_by_an_automatic_one() -> None:
    settings = Settings(servers=[ServerEntry("http://gpu-box:8000"), ServerEntry("http://laptop:11434")])
    settings.proxy.routes = [ProxyRoute("http://gpu-box:8000", 9001, kind="vllm", enabled=False)]
    planned = plan_routes(settings, free=lambda host, port: True)
    assert [(r.upstream, r.listen_port) for r in planned] == [("http://laptop:11434", 11435)]
    settings.proxy.routes[0].enabled = True
    assert [(r.upstream, r.listen_port) for r in plan_routes(settings, free=lambda host, port: True)] == [
        ("http://gpu-box:8000", 9001), ("http://laptop:11434", 11435)]
