"""Ollama, through its own API (it has no Prometheus ``/metrics``, ollama/ollama#3144).

Every poll reads ``/api/ps`` (the loaded models); ``/api/version`` and ``/api/tags`` (the
installed models) change rarely and are read every ``tags_interval`` seconds. For each loaded
model: its size, the part of it in VRAM and so the share running on the GPU (below 1 means
part of it runs on the CPU, which is slow), its context length (newer servers) and the
seconds until Ollama unloads it. A change in the loaded set gives ``model_loaded`` /
``model_unloaded`` events.

Emits ``ollama_model_size_bytes{server,model}``, ``ollama_model_vram_bytes{server,model}``,
``ollama_model_gpu_share_ratio{server,model}``, ``ollama_model_context_length{server,model}``,
``ollama_model_expires_in_seconds{server,model}``, ``llm_models_installed{server}``, a
``model_digest`` event per installed model (first read, and when ``/api/tags`` shows a new
digest) and the
common ``llm_models_loaded``, ``llm_model_loaded``, ``llm_poll_latency_seconds``
(:mod:`collectors.http`).

>>> round(expires_in("2024-06-04T14:38:31.83753-07:00", now=1717537011.0), 3)
100.838
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.records import Event, HealthState, Record, Sample, labels_of
from collectors.http import DEFAULT_TIMEOUT_S, ServerAnswers, ServerCollector, SourceError, list_field

log = logging.getLogger(__name__)

__all__ = ["OllamaCollector", "expires_in"]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def expires_in(expires_at: object, now: float) -> float | None:
    """Seconds from ``now`` until an Ollama ``expires_at`` timestamp (never negative), or
    ``None`` when it is missing or unreadable."""
    if not isinstance(expires_at, str) or not expires_at:
        return None
    try:
        when = datetime.fromisoformat(expires_at)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # Ollama always sends an offset; a naive time would be a guess
    return max(0.0, when.timestamp() - now)


class OllamaCollector(ServerCollector):
    """One Ollama server.

    Args:
        tags_interval: seconds between reads of ``/api/version`` and ``/api/tags``.
        (the others as :class:`~collectors.http.ServerCollector`)
    """

    kind = "ollama"
    what = "an Ollama server"

    @classmethod
    def recognise(cls, answers: ServerAnswers) -> bool:
        """Ollama answers ``/api/version`` with its version."""
        version = answers.json("/api/version")
        return isinstance(version, dict) and isinstance(version.get("version"), str)

    def __init__(self, base_url: str, name: str = "", interval: float = 1.0, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, tags_interval: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(base_url, name, interval, api_key, timeout, clock)
        self.tags_interval = tags_interval
        self._tags_due = 0.0
        self._installed: int | None = None
        self._digests: dict[str, str] = {}  # installed model -> digest, as last read

    def read(self, now: float) -> list[Record]:
        running = list_field(self.source.get_json("/api/ps"), "models", self.what, "/api/ps")
        out: list[Record] = []
        if time.monotonic() >= self._tags_due:
            out += self._read_slow(now)
        loaded: dict[str, str] = {}
        for entry in running:
            if not isinstance(entry, dict):
                continue
            model = entry.get("name") or entry.get("model")
            if not isinstance(model, str) or not model:
                continue
            loaded[model] = self._read_model(model, entry, now, out)
        out += self.models_loaded(now, loaded)
        if self._installed is not None:
            out.append(Sample("llm_models_installed", float(self._installed), now, labels_of(server=self.name)))
        return out

    def _read_model(self, model: str, entry: dict[str, Any], now: float, out: list[Record]) -> str:
        """One loaded model's samples into ``out``; returns what the model list says about it."""
        labels = labels_of(server=self.name, model=model)

        def add(metric: str, value: float | None) -> None:
            if value is not None:
                out.append(Sample(metric, value, now, labels))

        size, vram = _number(entry.get("size")), _number(entry.get("size_vram"))
        # A share needs a positive size and a VRAM part within it; anything else is garbage
        # (the hub's bounds would drop it; here it also stays out of the model's text).
        share = vram / size if size and size > 0 and vram is not None and 0 <= vram <= size else None
        add("ollama_model_size_bytes", size)
        add("ollama_model_vram_bytes", vram)
        add("ollama_model_gpu_share_ratio", share)
        add("ollama_model_context_length", _number(entry.get("context_length")))
        add("ollama_model_expires_in_seconds", expires_in(entry.get("expires_at"), now))
        parts = [f"{share:.0%} on GPU" if share is not None else "",
                 f"{size / 2**30:.1f} GiB" if size else ""]
        return ", ".join(p for p in parts if p)

    def _read_slow(self, now: float) -> list[Record]:
        """Version and installed models. A server that answers ``/api/ps`` but not these (an
        old version, a proxy in front) is still up: keep what we knew and retry later."""
        self._tags_due = time.monotonic() + self.tags_interval
        try:
            payload = self.source.get_json("/api/version")
            if isinstance(payload, dict) and isinstance(payload.get("version"), str):
                self.version = payload["version"]
            tags = list_field(self.source.get_json("/api/tags"), "models", self.what, "/api/tags")
            self._installed = len(tags)
        except SourceError as exc:
            if exc.state == HealthState.DOWN:
                raise
            log.info("%s: %s", self.name, exc.reason)
            return []
        return self._digest_events(tags, now)

    def _digest_events(self, tags: list[Any], now: float) -> list[Record]:
        """A ``model_digest`` event per installed model when first seen and when its digest
        changes (``ollama pull`` of a new version): the usage trends mark these."""
        out: list[Record] = []
        for entry in tags:
            name, digest = (entry.get("name"), entry.get("digest")) if isinstance(entry, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(digest, str) or self._digests.get(name) == digest:
                continue
            before = self._digests.get(name)
            self._digests[name] = digest
            text = f"{name} on {self.name}: digest {digest[:12]}" + (f" (was {before[:12]})" if before else "")
            out.append(Event("model_digest", self.name, text, now,
                             labels_of(server=self.name, model=name, digest=digest)))
        return out
