"""What changed under a model: its digest (Ollama ``/api/tags``), its server's version, the GPU
driver. The trends mark these, since they are the usual reasons a model got faster or slower.

The collectors report versions in their health (not stored); :class:`VersionRecorder`, a hub
subscriber, turns the first version seen of each source, and every later different one, into
an event (``server_version`` for LLM servers, ``gpu_driver`` for the GPU). The Ollama collector
emits ``model_digest`` events itself. :func:`change_markers` then reads the events back and keeps
the ones whose value differs from the one recorded before (across sessions and restarts).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.records import Event, Health, HealthState, Record, labels_of

KINDS = {"model_digest": "model digest", "server_version": "server version", "gpu_driver": "GPU driver"}
SHORT = {"model digest": "new digest", "server version": "server update", "GPU driver": "driver update"}


class VersionRecorder:
    """Hub subscriber: an event when a source's reported version is new or different."""

    def __init__(self, publish: Callable[[list[Record]], None]) -> None:
        self.publish = publish
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, records: Sequence[Record]) -> None:
        events: list[Record] = []
        for r in records:
            if not isinstance(r, Health) or r.state != HealthState.UP or not r.version:
                continue
            with self._lock:
                before = self._seen.get(r.source)
                if before == r.version:
                    continue
                self._seen[r.source] = r.version
            if r.kind == "gpu":
                events.append(Event("gpu_driver", r.source, f"NVIDIA driver {r.version}", r.ts,
                                    labels_of(version=r.version)))
            else:
                events.append(Event("server_version", r.source, f"{r.source} version {r.version}", r.ts,
                                    labels_of(server=r.source, version=r.version)))
        if events:
            self.publish(events)


@dataclass(frozen=True, slots=True)
class ChangeMarker:
    """A change that may explain a jump in a model's figures."""

    ts: float
    kind: str          # "model digest", "server version", "GPU driver"
    text: str          # e.g. "llama3:latest digest 9f438cb9cd58 → fe938a131f40"

    @property
    def short(self) -> str:
        """For a chart label: "new digest", "server update", "driver update"."""
        return SHORT[self.kind]


def change_markers(conn: sqlite3.Connection, t0: float, t1: float, model: str | None = None,
                   servers: Sequence[str] | None = None) -> list[ChangeMarker]:
    """Changes in ``[t0, t1]``: ``model``'s digest, the versions of ``servers`` (every server when
    None) and the GPU driver. A value is compared with the one recorded before it, however long
    before; the first value ever recorded is not a change."""
    rows = conn.execute("SELECT ts, kind, source, labels FROM events WHERE kind IN (?, ?, ?) AND ts<=? "
                        "ORDER BY ts", (*KINDS, t1)).fetchall()
    last: dict[tuple[str, str, str], str] = {}
    out = []
    for ts, kind, source, labels_text in rows:
        labels = json.loads(labels_text or "{}")
        if kind == "model_digest":
            if model is not None and labels.get("model") != model:
                continue
            key, value = (kind, labels.get("server", source), labels.get("model", "")), labels.get("digest", "")
        elif kind == "server_version":
            if servers is not None and labels.get("server", source) not in servers:
                continue
            key, value = (kind, labels.get("server", source), ""), labels.get("version", "")
        else:
            key, value = (kind, source, ""), labels.get("version", "")
        before = last.get(key)
        last[key] = value
        if before is None or before == value or ts < t0:
            continue
        if kind == "model_digest":
            text = f"{key[2]} on {key[1]}: digest {before[:12]} → {value[:12]}"
        elif kind == "server_version":
            text = f"{key[1]}: version {before} → {value}"
        else:
            text = f"GPU driver {before} → {value}"
        out.append(ChangeMarker(float(ts), KINDS[kind], text))
    return out
