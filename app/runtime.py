"""Builds and tears down the running core (settings → store → hub → collectors), the same
way for the GUI and for the headless recorder.

This is the one module that names the concrete parts: which collectors run
(:func:`default_collectors`), which notification sinks the alert engine uses
(:func:`build_alert_engine`), the metering proxies, the exporter and the usage service.
Everything else is wired through interfaces (:class:`~app.collector.Collector`,
:class:`~app.alerts.notify.Sink`, the hub's ``publish``), so a new collector or sink is one
line here."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.alerts.engine import AlertEngine
from app.alerts.notify import DesktopSink, Notifier, WebhookSink
from app.alerts.rules import ensure_user_rules
from app.collector import Collector
from app.config import ExporterSettings, ServerEntry, Settings, config_path, db_path, load_settings
from app.config_write import ConfigWriteError, save_setting
from app.exporter import MetricsExporter
from app.hub import Hub
from app.proxy.group import ProxyGroup
from app.records import Record, RequestRecord
from app.request_stats import RequestStats
from app.server_names import display_name, host_port, normalise_url
from app.storage.retention import GB
from app.storage.store import Store
from app.usage.service import UsageService
from collectors.discovery import DiscoveryCollector
from collectors.energy import CpuEnergyCollector
from collectors.gpu import GpuCollector
from collectors.http import ServerCollector
from collectors.system import SystemCollector

log = logging.getLogger(__name__)

EXIT_STOPPED = 3  # a headless recorder whose recording stopped by itself (a thread that must not die died)


def default_collectors(settings: Settings) -> list[Collector]:
    """Every collector the app starts with, built from the user's settings. Discovery creates
    one collector per LLM server it finds; the GPU collector watches those servers' processes."""
    discovery = DiscoveryCollector(settings, server_interval=settings.server_interval_s)
    return [
        SystemCollector(interval=settings.system_interval_s),
        discovery,
        GpuCollector(servers=discovery.servers),
        CpuEnergyCollector(),
    ]


def build_alert_engine(hub: Hub, rules: Path | None = None) -> AlertEngine:
    """The app's alert engine: the user's rule file (created from the shipped defaults on first
    run), reading the hub's buffers, publishing through it, taking up the alerts' states of the
    previous run from the store, notifying through the desktop and webhook sinks (the GUI adds
    the tray's)."""
    engine = AlertEngine(hub.buffers, publish=hub.publish, clock=hub.clock)
    engine.load(ensure_user_rules(rules))
    if hub.store is not None:
        engine.restore_from(hub.store.path)  # the alerts' states of the previous run
    notifier = Notifier([DesktopSink(), WebhookSink()], engine.rule_file.notifications, hub.clock)
    notifier.configure(engine.rule_file.notifications)
    engine.notifier = notifier
    engine.add_listener(notifier.submit)
    return engine


def publish_with_known_names(hub: Hub) -> Callable[[list[Record]], None]:
    """A proxy of a ``[[proxy.routes]]`` entry without a ``kind`` guesses the kind from the port;
    the collectors may know better (an OpenAI-compatible server on vLLM's port). Request records
    take the collectors' identity of the server so one server has one ``server`` label."""
    def publish(records: list[Record]) -> None:
        known = {"{}:{}".format(*host_port(h.url)): h.source for h in list(hub.health.values()) if h.url}
        for r in records:
            if isinstance(r, RequestRecord):
                r.server = known.get(r.server.partition("@")[2], r.server)
        hub.publish(records)
    return publish


@dataclass
class Runtime:
    """The running core: what the GUI and ``--headless`` both drive."""

    settings: Settings
    store: Store
    hub: Hub
    problems: list[str] = field(default_factory=list)  # config errors to show the user
    alerts: AlertEngine | None = None  # rule file errors are in alerts.problems
    requests: RequestStats | None = None  # live request figures, recent requests
    proxies: ProxyGroup | None = None     # the metering proxies; started when [proxy] enabled
    exporter: MetricsExporter | None = None  # /metrics for Prometheus; only when asked for
    discovery: DiscoveryCollector | None = None  # finds the servers (and with them the proxies' routes)
    config_file: Path | None = None       # where the settings came from; switches are saved there
    usage: UsageService | None = None     # usage rollup, version changes, speed ratios

    @classmethod
    def create(cls, db: str | Path | None = None, settings: Settings | None = None,
               session_name: str = "", serve_metrics: tuple[str, int] | None = None,
               collectors: list[Collector] | None = None) -> Runtime:
        """The core, not started. Without ``settings`` they are read from the config file (and
        switches flipped in the window are saved there). ``serve_metrics`` (``--serve-metrics``)
        turns the exporter on at that address. ``collectors`` replaces
        :func:`default_collectors` (e.g. discovery on other ports)."""
        problems: list[str] = []
        config_file = None
        if settings is None:
            config_file = config_path()
            settings, problems = load_settings(config_file)
            for p in problems:
                log.warning("config: %s", p)
        if serve_metrics is not None:
            settings.exporter = ExporterSettings(True, *serve_metrics, settings.exporter.max_series_per_metric)
        store = Store(db_path(db), retention_days=settings.retention_days,
                      retention_max_bytes=int(settings.retention_gb * GB) if settings.retention_gb else None)
        store.start(session_name=session_name)
        hub = Hub(store)
        collectors = default_collectors(settings) if collectors is None else collectors
        hub.add_collectors(collectors)
        discovery = next((c for c in collectors if isinstance(c, DiscoveryCollector)), None)
        requests = RequestStats(hub.publish)
        hub.subscribe(requests)
        proxies = ProxyGroup(settings, publish_with_known_names(hub), requests.watch_active,
                             found=discovery.servers if discovery is not None else tuple)
        hub.subscribe(proxies.on_records)  # a server found gets its proxy route
        usage = UsageService(store, hub.publish)
        hub.subscribe(usage.versions)
        exporter = MetricsExporter.for_hub(hub, settings.exporter) if settings.exporter.enabled else None
        runtime = cls(settings, store, hub, problems, alerts=build_alert_engine(hub), requests=requests,
                      proxies=proxies, exporter=exporter, discovery=discovery, config_file=config_file,
                      usage=usage)
        if runtime.alerts is not None:
            runtime.alerts.names = runtime.display_name
        return runtime

    def display_name(self, server: str) -> str:
        """What the user reads for a server (its configured name, else its identity
        ``kind@host:port``, which is what is stored); see :mod:`app.server_names`."""
        return display_name(server, self.settings)

    def switch_proxy(self, on: bool) -> str:
        """Switch the metering proxies on or off, and remember it (``[proxy] enabled`` in the
        config file) for the next start. Returns why it could not be remembered, ``""`` when it
        was (or when this run has no config file, e.g. ``main.py proxy``)."""
        if self.proxies is None:
            return ""
        if on:
            self.proxies.start()  # a route that cannot listen says why in proxies.status()
        else:
            self.proxies.stop()
        self.settings.proxy.enabled = self.proxies.on
        if self.config_file is None:
            return ""
        try:
            save_setting(self.config_file, "proxy", "enabled", self.proxies.on)
        except ConfigWriteError as exc:
            log.warning("proxy switch not saved: %s", exc)
            return str(exc)
        return ""

    def apply(self, settings: Settings, reconnect: Iterable[str] = (), problems: list[str] | None = None) -> list[str]:
        """Use saved settings while running (the settings dialog's Save): retention limits (a
        pass runs now), poll intervals, servers added, edited or removed (their collectors
        stop; discovery scans again at once), the proxies' routes, options and on/off switch.
        ``reconnect``: URLs of servers whose API key changed, watched again with the new one;
        ``problems``: the config file's problems now. Returns the errors of proxy routes that
        could not start."""
        old, self.settings = self.settings, settings
        if problems is not None:
            self.problems = problems
        self.store.set_retention(settings.retention_days,
                                 int(settings.retention_gb * GB) if settings.retention_gb else None)
        for collector in self.hub.scheduler.collectors:
            if isinstance(collector, SystemCollector):
                collector.interval = settings.system_interval_s
            elif isinstance(collector, ServerCollector):
                collector.interval = settings.server_interval_s
        if self.discovery is not None:
            self._rediscover(self.discovery, old, settings, {normalise_url(u) for u in reconnect})
        errors = self.proxies.reconfigure(settings) if self.proxies is not None else []
        log.info("settings applied")
        return errors

    def _rediscover(self, discovery: DiscoveryCollector, old: Settings, new: Settings, reconnect: set[str]) -> None:
        """Stop the collectors of servers whose entry changed or went (discovery finds the
        changed ones again with their new name, kind and key), then scan now."""
        def entries(s: Settings) -> dict[str, ServerEntry]:
            return {normalise_url(e.url): e for e in s.servers}
        before, after = entries(old), entries(new)
        stale = {url for url, e in before.items() if after.get(url) != e} | reconnect
        if old.discover_local and not new.discover_local:
            stale |= {ref.url for ref in discovery.servers() if ref.url not in after}
        discovery.server_interval = new.server_interval_s
        discovery.settings = new
        for url in stale:
            name = discovery.forget(url)
            if name is not None:
                self.hub.remove_source(name)
        self.hub.scheduler.wake(discovery.name)

    def start(self) -> None:
        self.hub.start()
        if self.alerts is not None:
            self.alerts.start()
        if self.requests is not None:
            self.requests.start()
        if self.usage is not None:
            self.usage.start()
        if self.proxies is not None and self.settings.proxy.enabled:
            self.proxies.start()  # a route that cannot listen says why in proxies.status()
        if self.exporter is not None and not self.exporter.start():
            self.problems.append(self.exporter.error)  # recording goes on without it
        log.info("recording to %s, session %s", self.store.path, self.store.session_id)

    def stop(self) -> None:
        """Stop collectors first (no new records), then flush and close the store."""
        if self.proxies is not None:
            self.proxies.stop()  # in-flight requests are recorded as cancelled
        if self.requests is not None:
            self.requests.stop()
        if self.usage is not None:
            self.usage.stop()
        if self.alerts is not None:
            self.alerts.stop()
        self.hub.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.store.close()
        log.info("stopped; database flushed")

    def failure(self) -> str:
        """Why recording stopped although the app runs (the database writer or a collector
        thread ended); ``""`` while everything records."""
        return "; ".join(f for f in (self.store.failure, self.hub.failure()) if f)

    def record_until_signalled(self, label: str = "llmmon") -> str:
        """Headless use: record until Ctrl-C or SIGTERM, then stop with everything written.
        Returns ``""``, or why it stopped early: a thread that must not die died (the caller
        exits non-zero). The runtime must already be started; call from the main thread."""
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"{label}: recording to {self.store.path} (session {self.store.session_id}); "
              "Ctrl-C to stop", flush=True)
        if self.exporter is not None:
            print(f"{label}: {self.exporter.status()}", flush=True)
        failure = ""
        while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
            if failure := self.failure():
                break
        self.stop()
        if failure:
            print(f"{label}: recording stopped: {failure}", file=sys.stderr, flush=True)
        else:
            print(f"{label}: stopped, all data written", flush=True)
        return failure
