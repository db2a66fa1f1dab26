"""The metering proxies: one in front of every LLM server llmmon knows, switched on and off
together (by the runtime, the Requests tab's switch or ``main.py proxy``).

Which routes (:func:`plan_routes`): each ``[[proxy.routes]]`` entry as written; then one for
every other server llmmon knows — the ``[[servers]]`` entries and the servers discovery found
(a llama.cpp server on :8080 found by the port scan gets one just like a configured one) — on
``127.0.0.1:<its port + 1>``, or the next port up when that one is taken (by another route, by
a server on this machine, or by another program). A server found while the proxies run gets its
route at once (:meth:`ProxyGroup.update`). With no server known there is no route: nothing
listens in front of a server that is not there. A route whose port cannot be bound reports a
clear error and the others run.

Records are labelled with the server's identity (``kind@host:port``, see
:mod:`app.server_names`), never with a configured name, so renaming a server keeps its series.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from app.config import ProxyRoute, Settings
from app.proxy.options import ForwardOptions, is_loopback, port_problem, server_label, url_host
from app.records import Event, Record
from app.server_names import host_port, normalise_url

if TYPE_CHECKING:
    from app.proxy.server import ProxyServer

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SEARCH = 20
"""How many ports from a server's port + 1 up are tried for its route."""


class KnownServer(Protocol):
    """A server llmmon knows (e.g. :class:`collectors.gpu.ServerRef` from discovery)."""

    @property
    def url(self) -> str: ...

    @property
    def kind(self) -> str: ...


def _active_gauge(server: ProxyServer) -> Callable[[], int]:
    """Reads this server's in-flight count (a function per server: a lambda in the loop that
    starts them would read whichever server the loop variable names when it is called)."""
    return lambda: server.active_requests


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (bound and released at once; with the
    ``SO_REUSEADDR`` aiohttp sets on POSIX, so a port in TIME_WAIT counts as free)."""
    if port_problem(port):
        return False
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _pick(server_port: int, taken: set[int], free: Callable[[str, int], bool]) -> int:
    """The listen port of a new route: the server's port + 1, else the next free one; port + 1
    when none is free (starting it then says why)."""
    first = server_port + 1
    for port in range(first, min(first + SEARCH, 65536)):
        if port not in taken and free(LOOPBACK, port):
            return port
    return first


def plan_routes(settings: Settings, found: Iterable[KnownServer] = (), keep: Sequence[ProxyRoute] = (),
                free: Callable[[str, int], bool] = port_free) -> list[ProxyRoute]:
    """The routes to run: the configured ones, then one per other known server.

    Args:
        settings: ``[[proxy.routes]]`` and ``[[servers]]``.
        found: the servers discovery found (their identified kind wins over ``auto``).
        keep: the routes planned before: a server keeps its port while that stays free.
        free: whether a port can be listened on (tests and the running group pass their own).
    """
    configured = settings.proxy.routes
    routes = [r for r in configured if r.enabled]  # a route switched off stays in the file only
    if settings.proxy.routes_only:
        return routes
    servers: dict[str, str] = {}   # normalised URL → kind
    for entry in settings.servers:
        servers.setdefault(normalise_url(entry.url), entry.kind)
    for ref in found:
        url = normalise_url(ref.url)
        servers[url] = ref.kind or servers.get(url, "auto")
    covered = {normalise_url(r.upstream) for r in configured}  # switched off: no automatic route either
    taken = {r.listen_port for r in routes}
    taken |= {port for host, port in map(host_port, servers) if is_loopback(host)}
    before = {normalise_url(r.upstream): r.listen_port for r in keep}
    kept: dict[str, int] = {}   # routes stay where they were first: clients were told that address
    for url in servers:
        port = before.get(url)
        if url not in covered and port is not None and port not in taken and free(LOOPBACK, port):
            kept[url] = port
            taken.add(port)
    for url, kind in servers.items():
        if url in covered:
            continue
        port = kept.get(url) or _pick(host_port(url)[1], taken, free)
        taken.add(port)
        routes.append(ProxyRoute(upstream=url, listen_port=port, kind=kind))
    return routes


@dataclass(frozen=True)
class RouteStatus:
    """What the GUI shows for one route."""

    name: str          # the server's identity: the ``server`` label of its records
    upstream: str      # where the server is
    listen: str        # where clients should point
    running: bool
    error: str = ""


class ProxyGroup:
    """The proxies of every known server.

    Args:
        settings: the user's settings (``[proxy]`` and ``[[servers]]``).
        publish: where request records go (``Hub.publish``).
        watch_active: called as ``watch_active(server, gauge)`` for each started proxy (e.g.
            :meth:`app.request_stats.RequestStats.watch_active`); returns an unwatch function.
        found: the servers discovery has found so far (``DiscoveryCollector.servers``).
    """

    def __init__(self, settings: Settings, publish: Callable[[list[Record]], None],
                 watch_active: Callable[[str, Callable[[], int]], Callable[[], None]] | None = None,
                 found: Callable[[], Iterable[KnownServer]] = tuple) -> None:
        self.settings = settings
        self.publish = publish
        self.watch_active = watch_active
        self.found = found
        proxy = settings.proxy
        self.options = ForwardOptions(include_usage=proxy.include_usage, store_content=proxy.store_content,
                                      content_max_chars=proxy.content_max_chars)
        self._lock = threading.RLock()   # the GUI switches, discovery's thread adds routes
        self._on = False
        self._servers: dict[int, ProxyServer] = {}   # by listen port; aiohttp loads when the first starts
        self._errors: dict[int, str] = {}
        self._unwatch: dict[int, Callable[[], None]] = {}
        self.routes: list[ProxyRoute] = []
        self.routes = self._plan()

    @property
    def on(self) -> bool:
        """Switched on: every route runs, and servers found later get theirs at once."""
        return self._on

    @property
    def running(self) -> bool:
        return any(s.running for s in list(self._servers.values()))

    def start(self) -> list[str]:
        """Switch on and start every route; returns the errors of those that could not start.
        When there are routes and none could start, the switch goes back off."""
        with self._lock:
            self._on = True
            self._errors = {}
            self.routes = self._plan()
            self._sync()
            if self.routes and not self._servers:
                self._on = False
            return list(self._errors.values())

    def stop(self) -> None:
        """Switch off: stop every proxy (requests in flight are recorded as cancelled)."""
        with self._lock:
            self._on = False
            self._errors = {}
            for port in list(self._servers):
                self._stop_one(port)

    def update(self) -> list[str]:
        """Plan again for the servers known now; while switched on, start the new routes and
        stop those whose server is gone. Returns the errors of routes that could not start."""
        with self._lock:
            self.routes = self._plan()
            if self._on:
                self._sync()
            return list(self._errors.values())

    def reconfigure(self, settings: Settings) -> list[str]:
        """Use new settings (the settings window's Save): plan the routes again; proxies whose
        options changed restart with the new ones (requests in flight are recorded as
        cancelled); then they run or stay off as ``[proxy] enabled`` says. Returns the errors of
        routes that could not start."""
        with self._lock:
            self.settings = settings
            proxy = settings.proxy
            options = ForwardOptions(include_usage=proxy.include_usage, store_content=proxy.store_content,
                                     content_max_chars=proxy.content_max_chars)
            if options != self.options:
                self.options = options
                for port in list(self._servers):
                    self._stop_one(port)
            if proxy.enabled:
                return self.start()
            self.stop()
            self.routes = self._plan()
            return []

    def on_records(self, records: list[Record]) -> None:
        """Hub subscriber: a server found by discovery gets its route."""
        if any(isinstance(r, Event) and r.kind == "server_found" for r in records):
            self.update()

    def _plan(self) -> list[ProxyRoute]:
        ours = set(self._servers)   # our own proxies hold these ports: they are not taken
        return plan_routes(self.settings, self.found(), self.routes,
                           lambda host, port: port in ours or port_free(host, port))

    def _sync(self) -> None:
        wanted = {r.listen_port: r for r in self.routes}
        for port, server in list(self._servers.items()):
            route = wanted.get(port)
            if route is None or normalise_url(route.upstream) != normalise_url(server.upstream):
                self._stop_one(port)
        self._errors = {p: e for p, e in self._errors.items() if p in wanted}
        for route in self.routes:
            if route.listen_port not in self._servers and route.listen_port not in self._errors:
                self._start_one(route)

    def _start_one(self, route: ProxyRoute) -> None:
        from app.proxy.server import ProxyServer  # aiohttp loads only when a proxy runs
        port = route.listen_port
        if problem := port_problem(port):  # e.g. listen = 99999, or 65535 + 1
            self._errors[port] = f"cannot listen on {route.listen_host}:{port}: {problem}"
            log.error("proxy: %s", self._errors[port])
            return
        server = ProxyServer(route.upstream, listen_host=route.listen_host, listen_port=port,
                             publish=self.publish, kind=route.kind, options=self.options)
        try:
            server.start()
        except OSError as exc:
            self._errors[port] = str(exc)
            log.error("proxy: %s", exc)
            return
        self._servers[port] = server
        if self.watch_active is not None:
            self._unwatch[port] = self.watch_active(server.name, _active_gauge(server))

    def _stop_one(self, port: int) -> None:
        unwatch = self._unwatch.pop(port, None)
        if unwatch is not None:
            unwatch()
        self._servers.pop(port).stop()

    def status(self) -> list[RouteStatus]:
        with self._lock:
            out = []
            for route in self.routes:
                server = self._servers.get(route.listen_port)
                out.append(RouteStatus(
                    name=server.name if server else server_label(route.upstream, route.kind),
                    upstream=route.upstream, listen=f"http://{url_host(route.listen_host)}:{route.listen_port}",
                    running=bool(server and server.running), error=self._errors.get(route.listen_port, "")))
            return out
