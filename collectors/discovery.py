"""Finds LLM servers, tells which kind each is, and starts a collector for each.

Candidates are the default ports of every server kind on this machine (:mod:`app.server_kinds`:
Ollama 11434, vLLM 8000, llama.cpp 8080, LM Studio's 1234; unless ``discover_local`` is off)
and the servers the user listed in ``config.toml``. Discovery is itself a collector: it runs on
its own thread, so start-up never waits for it; it probes every candidate not yet found in
parallel, with short timeouts, and scans again every ``interval`` seconds, so a server started
later is picked up then. The collector of each server found is handed to the scheduler through
:meth:`~app.collector.Collector.new_collectors`.

How a server is recognised (:func:`identify`): each kind's collector class, in the order of
:data:`app.server_kinds.KINDS`, is asked whether the server's answers are its kind's
(``recognise``; Ollama: ``/api/version``; vLLM: ``vllm:`` metrics; llama.cpp: ``llamacpp:``
metrics or ``/props``; last, any OpenAI-compatible server: ``/v1/models``); each path is
requested once. A configured server with a ``kind`` other than ``auto`` is not probed; an
unknown kind is watched as OpenAI-compatible.

API keys of configured servers come from the OS keyring (entry ``api_key_ref``), never from the
config file.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app import server_kinds
from app.collector import Collector
from app.config import ServerEntry, Settings
from app.records import Event, Health, HealthState, Record, labels_of
from app.secrets import get_secret
from app.server_kinds import ServerKind, load, server_kind
from app.server_names import normalise_url
from collectors.gpu import ServerRef
from collectors.http import HttpSource, ServerAnswers, ServerCollector, SourceError, server_name

log = logging.getLogger(__name__)

__all__ = ["DiscoveryCollector", "Probe", "identify", "collector_class", "default_ports", "normalise_url",
           "api_key_name"]


def collector_class(kind: ServerKind) -> type[ServerCollector]:
    """The collector class a server kind names (imported on first use)."""
    cls = load(kind.collector)
    if not (isinstance(cls, type) and issubclass(cls, ServerCollector)):
        raise TypeError(f"{kind.collector} (server kind {kind.id!r}) is not a ServerCollector")
    return cls


def default_ports(kinds: tuple[ServerKind, ...] | None = None) -> tuple[tuple[int, str], ...]:
    """``(port, display name)`` of every kind (default: all known) that has a default port."""
    chosen = server_kinds.KINDS if kinds is None else kinds
    return tuple((k.default_port, k.display_name) for k in chosen if k.default_port is not None)


@dataclass(frozen=True)
class Probe:
    """What a probe found at ``url``: a ``kind`` ("" if nothing usable), or why not."""

    url: str
    kind: str = ""
    reason: str = ""
    state: HealthState = HealthState.DOWN


def api_key_name(url: str) -> str:
    """The keyring entry the settings dialog stores a server's API key under, made from its
    URL; config.toml names it in ``api_key_ref``, which is what discovery reads.

    >>> api_key_name("http://GPU-box:8000/")
    'api_key:http://gpu-box:8000'
    """
    return f"api_key:{normalise_url(url)}"


def identify(url: str, timeout: float = 1.0, api_key: str | None = None,
             kinds: tuple[ServerKind, ...] | None = None) -> Probe:
    """Which kind of LLM server answers at ``url`` (see the module docstring); ``kinds``
    defaults to every kind of :data:`app.server_kinds.KINDS`."""
    source = HttpSource(url, timeout=timeout, api_key=api_key)
    answers = ServerAnswers(source)
    try:
        for kind in server_kinds.KINDS if kinds is None else kinds:
            if collector_class(kind).recognise(answers):
                return Probe(url, kind.id)
        models = answers.get("/v1/models")
        what = "an HTML page" if models.looks_like_html else f"HTTP {models.status} at /v1/models"
        return Probe(url, "", f"not an LLM server ({what})", HealthState.ERROR)
    except SourceError as exc:
        return Probe(url, "", exc.reason, exc.state)
    finally:
        source.close()


@dataclass(frozen=True)
class _Candidate:
    url: str
    entry: ServerEntry | None = None   # None: a default local port
    label: str = ""                    # "Ollama" for the default ports


class DiscoveryCollector(Collector):
    """Finds servers and creates a collector for each (see :meth:`new_collectors`).

    Args:
        settings: the configured servers and whether to look on the local default ports.
        interval: seconds between scans for servers not found yet.
        probe_timeout: seconds each probe request may take.
        server_interval: the poll interval of the collectors it creates.
        ports: the local ports to look at, with the name of what usually listens there
            (default: each kind's default port).
        kinds: the server kinds to recognise (default :data:`app.server_kinds.KINDS`).
    """

    kind = "discovery"

    def __init__(self, settings: Settings, interval: float = 30.0, probe_timeout: float = 1.0,
                 server_interval: float = 1.0,
                 ports: tuple[tuple[int, str], ...] | None = None,
                 kinds: tuple[ServerKind, ...] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = "discovery"
        self.interval = interval
        self.settings = settings
        self.probe_timeout = probe_timeout
        self.server_interval = server_interval
        self.kinds = server_kinds.KINDS if kinds is None else kinds
        self.ports = default_ports(self.kinds) if ports is None else ports
        self.clock = clock
        self._created: list[Collector] = []       # not yet handed to the scheduler
        self._found: dict[str, ServerRef] = {}   # normalised URL → server
        self._lock = threading.Lock()            # servers() is called from other collectors' threads
        self.scanned = threading.Event()  # set once the first scan is done (``main.py proxy`` waits)

    def new_collectors(self) -> list[Collector]:
        """The collectors of the servers found since the last call."""
        created, self._created = self._created, []
        return created

    def forget(self, url: str) -> str | None:
        """Stop counting the server at ``url`` as found, so the next scan probes it again (the
        user edited or removed it); returns the name of its collector, ``None`` if not found."""
        with self._lock:
            ref = self._found.pop(normalise_url(url), None)
        return ref.name if ref is not None else None

    def servers(self) -> list[ServerRef]:
        """The servers found so far (thread-safe; the GPU collector watches their processes)."""
        with self._lock:
            return list(self._found.values())

    def _candidates(self) -> list[_Candidate]:
        out: list[_Candidate] = []
        if self.settings.discover_local:
            out += [_Candidate(f"http://127.0.0.1:{port}", None, label) for port, label in self.ports]
        out += [_Candidate(normalise_url(e.url), e) for e in self.settings.servers]
        unique: dict[str, _Candidate] = {}
        for c in out:  # a configured entry wins over the default port it repeats
            if c.url not in unique or c.entry is not None:
                unique[c.url] = c
        with self._lock:
            return [c for url, c in unique.items() if url not in self._found]

    def _api_key(self, entry: ServerEntry | None) -> str | None:
        return get_secret(entry.api_key_ref) if entry is not None and entry.api_key_ref else None

    def _probe(self, candidate: _Candidate, api_key: str | None) -> Probe:
        entry = candidate.entry
        if entry is not None and entry.kind != "auto":
            return Probe(candidate.url, entry.kind)
        return identify(candidate.url, self.probe_timeout, api_key, self.kinds)

    def poll(self) -> list[Record]:
        now = self.clock()
        candidates = self._candidates()
        keys = {c.url: self._api_key(c.entry) for c in candidates}
        probes: list[Probe] = []
        if candidates:
            with ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix="probe") as pool:
                probes = list(pool.map(lambda c: self._probe(c, keys[c.url]), candidates))
        out: list[Record] = []
        missing: list[str] = []
        for candidate, probe in zip(candidates, probes, strict=True):
            entry = candidate.entry
            if probe.kind:
                out += self._start(candidate, probe.kind, keys[candidate.url], now)
                continue
            missing.append(f"{candidate.label or candidate.url}: {probe.reason}")
            if entry is not None:  # the user asked for this one: show it, and why it is not up
                out.append(Health(server_name("server", candidate.url), probe.state, now,
                                  reason=probe.reason, kind="server", url=candidate.url))
        found = self.servers()
        summary = "found " + ", ".join(s.name for s in found) if found else "no LLM server found"
        if missing:
            summary += "; not found: " + "; ".join(missing)
        out.append(Health(self.name, HealthState.UP, now, reason=summary, kind=self.kind))
        self.scanned.set()
        return out

    def _start(self, candidate: _Candidate, kind: str, api_key: str | None, now: float) -> list[Record]:
        watched_as = server_kind(kind)  # an unknown configured kind: the generic OpenAI-compatible one
        # The identity, not the configured name: a rename must not start a new series.
        name = server_name(watched_as.id, candidate.url)
        try:
            collector = collector_class(watched_as)(candidate.url, name=name, interval=self.server_interval,
                                                    api_key=api_key)
        except Exception as exc:  # a bad config entry (a URL it cannot use) must not stop discovery
            log.error("cannot watch %s as %s: %s", candidate.url, kind, exc)
            return [Health(name, HealthState.ERROR, now, reason=f"cannot watch it: {exc}"[:200],
                           kind="server", url=candidate.url)]
        self._created.append(collector)
        with self._lock:
            self._found[candidate.url] = ServerRef(collector.name, candidate.url, watched_as.id)
        log.info("found %s server at %s", kind, candidate.url)
        return [Event("server_found", self.name, f"found {kind} server {collector.name}", now,
                      labels_of(server=collector.name, kind=watched_as.id))]
