"""Finds LLM servers, tells which kind each is, and starts a collector for each.

Candidates are the default local ports (Ollama 11434, vLLM / OpenAI-compatible 8000, llama.cpp
8080, LM Studio 1234, unless ``discover_local`` is off) and the servers the user listed in
``config.toml``. Discovery is itself a collector: it runs on its own thread, so start-up never
waits for it; it probes every candidate not yet found in parallel, with short timeouts, and
scans again every ``interval`` seconds, so a server started later is picked up then.

How a server is recognised (:func:`identify`): ``/api/version`` answering a version → Ollama;
``/metrics`` with ``vllm:`` metrics → vLLM, with ``llamacpp:`` metrics or a ``/props`` with
generation settings → llama.cpp; ``/v1/models`` with a model list → OpenAI-compatible. The
collector comes from :data:`FACTORIES` (kind → class); a kind without an entry is watched as
OpenAI-compatible. A configured server with a ``kind`` other than ``auto`` is not probed.

API keys of configured servers come from the OS keyring (entry ``api_key_ref``), never from the
config file.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app.config import ServerEntry, Settings
from app.records import Event, Health, HealthState, Record, labels_of
from app.secrets import get_secret
from app.server_names import normalise_url
from collectors.base import Collector
from collectors.gpu import ServerRef
from collectors.http import Answer, HttpSource, SourceError, server_name
from collectors.llamacpp import LlamaCppCollector
from collectors.ollama import OllamaCollector
from collectors.vllm import OpenAICompatCollector, VllmCollector

log = logging.getLogger(__name__)

__all__ = ["DiscoveryCollector", "Probe", "identify", "FACTORIES", "DEFAULT_PORTS", "normalise_url", "api_key_name"]

# kind → collector class, called as cls(base_url, name=..., api_key=...)
FACTORIES: dict[str, Callable[..., Collector]] = {
    "ollama": OllamaCollector,
    "vllm": VllmCollector,
    "openai": OpenAICompatCollector,
    "llamacpp": LlamaCppCollector,
}
FALLBACK_KIND = "openai"

DEFAULT_PORTS: tuple[tuple[int, str], ...] = (
    (11434, "Ollama"), (8000, "vLLM"), (8080, "llama.cpp"), (1234, "LM Studio"))


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


def _json(answer: Answer) -> object | None:
    """The JSON of a 200 answer, or ``None``."""
    if answer.status != 200 or answer.looks_like_html:
        return None
    try:
        payload: object = json.loads(answer.body)
    except ValueError:
        return None
    return payload


def identify(url: str, timeout: float = 1.0, api_key: str | None = None) -> Probe:
    """Which kind of LLM server answers at ``url`` (see the module docstring)."""
    source = HttpSource(url, timeout=timeout, api_key=api_key)
    try:
        version = _json(source.get("/api/version"))
        if isinstance(version, dict) and isinstance(version.get("version"), str):
            return Probe(url, "ollama")
        metrics = source.get("/metrics")
        if metrics.status == 200 and not metrics.looks_like_html:
            text = metrics.text
            if "vllm:" in text:
                return Probe(url, "vllm")
            if "llamacpp:" in text:
                return Probe(url, "llamacpp")
        props = _json(source.get("/props"))
        if isinstance(props, dict) and "default_generation_settings" in props:
            return Probe(url, "llamacpp")
        models = source.get("/v1/models")
        if models.status in (401, 403):
            return Probe(url, "openai")  # an OpenAI-style API behind a key: the collector will say so
        listing = _json(models)
        if isinstance(listing, dict) and isinstance(listing.get("data"), list):
            return Probe(url, "openai")
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
    """Finds servers and hands a new collector for each to ``add`` (the scheduler's).

    Args:
        settings: the configured servers and whether to look on the local default ports.
        add: called with each new collector; may also be given later with :meth:`attach`.
        interval: seconds between scans for servers not found yet.
        probe_timeout: seconds each probe request may take.
        server_interval: the poll interval of the collectors it creates.
        ports: the local ports to look at, with the name of what usually listens there.
        factories: kind → collector class (default :data:`FACTORIES`).
    """

    kind = "discovery"

    def __init__(self, settings: Settings, add: Callable[[Collector], None] | None = None,
                 interval: float = 30.0, probe_timeout: float = 1.0, server_interval: float = 1.0,
                 ports: tuple[tuple[int, str], ...] = DEFAULT_PORTS,
                 factories: dict[str, Callable[..., Collector]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = "discovery"
        self.interval = interval
        self.settings = settings
        self.probe_timeout = probe_timeout
        self.server_interval = server_interval
        self.ports = ports
        self.factories = FACTORIES if factories is None else factories
        self.clock = clock
        self._add = add
        self._pending: list[Collector] = []
        self._found: dict[str, ServerRef] = {}   # normalised URL → server
        self._lock = threading.Lock()
        self.scanned = threading.Event()  # set once the first scan is done (``main.py proxy`` waits)

    def attach(self, add: Callable[[Collector], None]) -> None:
        """Start handing collectors to ``add`` (those found before are handed over now)."""
        with self._lock:
            self._add, pending, self._pending = add, self._pending, []
        for collector in pending:
            add(collector)

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
        return identify(candidate.url, self.probe_timeout, api_key)

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
        shown_kind = kind if kind in self.factories else FALLBACK_KIND
        # The identity, not the configured name: a rename must not start a new series.
        name = server_name(shown_kind, candidate.url)
        try:
            collector = self.factories[shown_kind](candidate.url, name=name, interval=self.server_interval,
                                                   api_key=api_key)
            with self._lock:
                add = self._add
                if add is None:
                    self._pending.append(collector)
            if add is not None:
                add(collector)
        except Exception as exc:  # a bad config entry (URL, duplicate name) must not stop discovery
            log.error("cannot watch %s as %s: %s", candidate.url, kind, exc)
            return [Health(name, HealthState.ERROR, now, reason=f"cannot watch it: {exc}"[:200],
                           kind="server", url=candidate.url)]
        with self._lock:
            self._found[candidate.url] = ServerRef(collector.name, candidate.url, shown_kind)
        log.info("found %s server at %s", kind, candidate.url)
        return [Event("server_found", self.name, f"found {kind} server {collector.name}", now,
                      labels_of(server=collector.name, kind=shown_kind))]
