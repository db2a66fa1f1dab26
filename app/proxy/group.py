"""The proxies the settings ask for, started and stopped together (by the runtime, the GUI's
"enable proxy" switch or ``main.py proxy``).

Without explicit ``[[proxy.routes]]`` the routes are: Ollama ``127.0.0.1:11434`` behind
``127.0.0.1:11435``, and each server in ``[[servers]]`` behind ``127.0.0.1:<its port + 1>``
(vLLM :8000 → :8001, llama.cpp :8080 → :8081). A route whose port cannot be bound reports a
clear error and the others run.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.config import ProxyRoute, Settings
from app.proxy.options import ForwardOptions, port_problem, server_label, url_host
from app.records import Record
from app.server_names import host_port

if TYPE_CHECKING:
    from app.proxy.server import ProxyServer

log = logging.getLogger(__name__)

def _active_gauge(server: ProxyServer) -> Callable[[], int]:
    """Reads this server's in-flight count (a function per server: a lambda in the loop that
    starts them would read whichever server the loop variable names when it is called)."""
    return lambda: server.active_requests


OLLAMA_DEFAULT = ProxyRoute(upstream="http://127.0.0.1:11434", listen_port=11435, kind="ollama")


def default_routes(settings: Settings) -> list[ProxyRoute]:
    """The routes to run: the user's, or one per known server on its port + 1."""
    if settings.proxy.routes:
        return list(settings.proxy.routes)
    routes = [OLLAMA_DEFAULT]
    for entry in settings.servers:
        port = host_port(entry.url)[1]
        routes.append(ProxyRoute(upstream=entry.url, listen_port=port + 1, kind=entry.kind,
                                 name=entry.name))
    unique: dict[int, ProxyRoute] = {}
    for route in routes:
        if route.listen_port in unique:
            log.warning("proxy: %s would also listen on :%d; set [[proxy.routes]] to choose",
                        route.upstream, route.listen_port)
            continue
        unique[route.listen_port] = route
    return list(unique.values())


@dataclass(frozen=True)
class RouteStatus:
    """What the GUI shows for one route."""

    name: str          # the server label of its records
    upstream: str      # where the server is
    listen: str        # where clients should point
    running: bool
    error: str = ""


class ProxyGroup:
    """All configured proxies.

    Args:
        settings: the user's settings (``[proxy]`` and ``[[servers]]``).
        publish: where request records go (``Hub.publish``).
        watch_active: called as ``watch_active(server, gauge)`` for each started proxy (e.g.
            :meth:`app.request_stats.RequestStats.watch_active`); returns an unwatch function.
    """

    def __init__(self, settings: Settings, publish: Callable[[list[Record]], None],
                 watch_active: Callable[[str, Callable[[], int]], Callable[[], None]] | None = None) -> None:
        self.settings = settings
        self.publish = publish
        self.watch_active = watch_active
        proxy = settings.proxy
        self.options = ForwardOptions(include_usage=proxy.include_usage, store_content=proxy.store_content,
                                      content_max_chars=proxy.content_max_chars)
        self.routes = default_routes(settings)
        self._servers: list[ProxyServer] = []  # the module is imported when the first starts
        self._errors: dict[int, str] = {}
        self._unwatch: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return any(s.running for s in self._servers)

    def start(self) -> list[str]:
        """Start every route; returns the errors of those that could not start."""
        if self._servers:
            return list(self._errors.values())
        from app.proxy.server import ProxyServer  # aiohttp loads only when a proxy runs
        self._errors = {}
        for route in self.routes:
            if problem := port_problem(route.listen_port):  # e.g. listen = 99999, or 65535 + 1
                self._errors[route.listen_port] = f"cannot listen on {route.listen_host}:{route.listen_port}: {problem}"
                log.error("proxy: %s", self._errors[route.listen_port])
                continue
            server = ProxyServer(route.upstream, listen_host=route.listen_host, listen_port=route.listen_port,
                                 publish=self.publish, name=route.name, kind=route.kind, options=self.options)
            try:
                server.start()
            except OSError as exc:
                self._errors[route.listen_port] = str(exc)
                log.error("proxy: %s", exc)
                continue
            self._servers.append(server)
            if self.watch_active is not None:
                self._unwatch.append(self.watch_active(server.name, _active_gauge(server)))
        return list(self._errors.values())

    def stop(self) -> None:
        for unwatch in self._unwatch:
            unwatch()
        for server in self._servers:
            server.stop()
        self._servers, self._unwatch = [], []

    def status(self) -> list[RouteStatus]:
        running = {s.listen_port: s for s in self._servers}
        out = []
        for route in self.routes:
            server = running.get(route.listen_port)
            out.append(RouteStatus(
                name=server.name if server else (route.name or server_label(route.upstream, route.kind)),
                upstream=route.upstream, listen=f"http://{url_host(route.listen_host)}:{route.listen_port}",
                running=bool(server and server.running), error=self._errors.get(route.listen_port, "")))
        return out
