""""Test connection" for a server the user is adding: which kind it is, its version, the
models it has, or why it cannot be used.

It does what llmmon will do once the server is saved, once: discovery's probe
(:func:`collectors.discovery.identify`) unless the user chose a kind, then one poll of the
collector its kind names in :data:`app.server_kinds.KINDS`). So the answer is the
one the app will get, with the collectors' own messages ("connection refused on :8000",
"HTTP 401 … (check the API key)"). It blocks for up to a few seconds: call it off the GUI
thread.

The API key is used for the requests and never kept or logged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.records import Health, HealthState, Sample
from app.server_kinds import kind_ids, server_kind
from collectors.discovery import collector_class, identify, normalise_url

log = logging.getLogger(__name__)

__all__ = ["ConnectionResult", "check_connection"]

DEFAULT_TIMEOUT_S = 3.0  # a remote box may be slower than the local poll timeout


@dataclass(frozen=True, slots=True)
class ConnectionResult:
    """What a connection test found at ``url``.

    Attributes:
        ok: the server answered as the kind it is and can be watched.
        kind: ``"ollama"``, ``"vllm"``, ``"llamacpp"``, ``"openai"``; ``""`` when unknown.
        version: the server's version or build, ``""`` when it does not say.
        models: the models it serves (loaded ones for Ollama).
        installed: Ollama only: how many models are installed.
        reason: why it cannot be used (``""`` when ``ok``).
    """

    url: str
    ok: bool
    kind: str = ""
    version: str = ""
    models: tuple[str, ...] = ()
    installed: int | None = None
    reason: str = ""

    def summary(self) -> str:
        """One line for the dialog.

        >>> ConnectionResult("http://h:11434", True, "ollama", "0.12.6", ("mistral:latest",), 2).summary()
        'Ollama 0.12.6 at http://h:11434: 1 model loaded (mistral:latest), 2 installed'
        >>> ConnectionResult("http://h:1", False, reason="connection refused on :1").summary()
        'Cannot use http://h:1: connection refused on :1'
        """
        if not self.ok:
            what = f" as {kind_name(self.kind)}" if self.kind else ""
            return f"Cannot use {self.url}{what}: {self.reason}"
        name = kind_name(self.kind)
        head = f"{name} {self.version}".rstrip() + f" at {self.url}: "
        listed = f" ({', '.join(self.models)})" if self.models else ""
        if self.kind == "ollama":
            found = f"{len(self.models)} model{'s' * (len(self.models) != 1)} loaded{listed}"
            if self.installed is not None:
                found += f", {self.installed} installed"
        else:
            found = f"{len(self.models)} model{'s' * (len(self.models) != 1)}{listed}"
        return head + found


def kind_name(kind: str) -> str:
    """What the user calls a server kind (its id when llmmon does not know it)."""
    return server_kind(kind).display_name if kind in kind_ids() else kind


def check_connection(url: str, kind: str = "auto", api_key: str | None = None,
                     timeout: float = DEFAULT_TIMEOUT_S) -> ConnectionResult:
    """Probe ``url`` (as ``kind``, or recognise it when ``"auto"``) and poll it once.

    Never raises for anything the server does; blocks up to a few times ``timeout``."""
    url = normalise_url(url)
    if kind == "auto":
        probe = identify(url, timeout, api_key)
        if not probe.kind:
            return ConnectionResult(url, False, reason=probe.reason)
        kind = probe.kind
    factory = collector_class(server_kind(kind))
    collector = factory(url, api_key=api_key, timeout=timeout)
    try:
        records = collector.poll()
    except Exception as exc:  # a collector bug must not reach the dialog as a crash
        log.exception("connection test of %s failed", url)
        return ConnectionResult(url, False, kind, reason=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        collector.close()
    health = next((r for r in records if isinstance(r, Health) and r.source == collector.name), None)
    if health is None or health.state != HealthState.UP:
        return ConnectionResult(url, False, kind, reason=health.reason if health else "no answer")
    models = sorted({dict(r.labels).get("model", "") for r in records
                     if isinstance(r, Sample) and r.name == "llm_model_loaded"} - {""})
    installed = next((int(r.value) for r in records if isinstance(r, Sample) and r.name == "llm_models_installed"),
                     None)
    return ConnectionResult(url, True, kind, health.version, tuple(models), installed)
