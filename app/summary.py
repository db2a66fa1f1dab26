"""The header strip's figures, computed from the live buffers and the hub's health map.

Qt-free so it can be tested headless. Only fresh data counts: a value older than
``FRESH_S`` is "no data", not a stale number pretending to be current.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.buffers import LiveBuffers
from app.records import Health, HealthState
from app.server_kinds import is_server_kind, own_series

FRESH_S = 15.0


@dataclass(frozen=True)
class Summary:
    """What the header strip shows; ``None`` means no fresh data for that figure."""

    servers_up: int = 0
    servers_total: int = 0
    models_loaded: int | None = None
    tokens_per_s: float | None = None
    ttft_p50_s: float | None = None
    active_requests: float | None = None
    gpu_state: str = "unknown"          # "up", "absent", "error", "unknown"
    gpu_reason: str = ""
    gpu_util_percent: float | None = None
    gpu_temp_c: float | None = None
    vram_used_bytes: float | None = None
    vram_total_bytes: float | None = None
    alerts_firing: int | None = None
    alerts_worst: str = ""


def _fresh_values(buffers: LiveBuffers, name: str, now: float, **match: str) -> list[float]:
    out = []
    for key in buffers.find(name, **match):
        point = buffers.latest(key)
        if point is not None and now - point[0] <= FRESH_S:
            out.append(point[1])
    return out


def _fresh_own(buffers: LiveBuffers, figure: str, now: float, **match: str) -> list[float]:
    """Fresh values of every server kind's own series for one figure (see
    :class:`app.server_kinds.OwnFigures`)."""
    return [v for name in own_series(figure) for v in _fresh_values(buffers, name, now, **match)]


def _sum_or_none(values: list[float]) -> float | None:
    return sum(values) if values else None


def watched_servers(health: dict[str, Health]) -> list[Health]:
    """The LLM servers' latest health: every server collector's, and the configured servers
    discovery could not identify yet (kind ``"server"``: the user added them, so they count,
    as down, rather than vanish from "Servers up")."""
    servers = [h for h in health.values() if is_server_kind(h.kind)]
    known_urls = {h.url for h in servers}
    return servers + [h for h in health.values() if h.kind == "server" and h.url not in known_urls]


def summarize(buffers: LiveBuffers, health: dict[str, Health], now: float,
              alerts: tuple[str | None, int] | None = None) -> Summary:
    """The header figures. ``alerts`` is the alert engine's ``(worst severity, firing count)``,
    ``None`` when no engine runs."""
    servers = watched_servers(health)
    gpu = [h for h in health.values() if h.kind == "gpu"]
    gpu_state = gpu[0].state.value if gpu else "unknown"
    models = _fresh_values(buffers, "llm_models_loaded", now)
    # Proxy-measured throughput is the client's truth; servers' own counters fill in when no
    # traffic goes through the proxy.
    tokens = (_fresh_values(buffers, "llm_tokens_per_second", now)
              or _fresh_own(buffers, "tokens_per_second", now))
    ttft = (_fresh_values(buffers, "llm_ttft_seconds", now, quantile="0.5")
            or _fresh_own(buffers, "ttft", now, quantile="0.5"))
    active = (_fresh_values(buffers, "llm_requests_active", now)
              or _fresh_own(buffers, "requests_active", now))
    used = _fresh_values(buffers, "gpu_memory_used_bytes", now)
    total = _fresh_values(buffers, "gpu_memory_total_bytes", now)
    util = _fresh_values(buffers, "gpu_utilization_percent", now)
    temp = _fresh_values(buffers, "gpu_temperature_celsius", now)
    return Summary(
        servers_up=sum(1 for h in servers if h.state == HealthState.UP),
        servers_total=len(servers),
        models_loaded=int(sum(models)) if models else None,
        tokens_per_s=_sum_or_none(tokens),
        ttft_p50_s=max(ttft) if ttft else None,
        active_requests=_sum_or_none(active),
        gpu_state=gpu_state,
        gpu_reason=gpu[0].reason if gpu else "",
        gpu_util_percent=max(util) if util else None,
        gpu_temp_c=max(temp) if temp else None,
        vram_used_bytes=_sum_or_none(used),
        vram_total_bytes=_sum_or_none(total),
        alerts_firing=None if alerts is None else alerts[1],
        alerts_worst="" if alerts is None else alerts[0] or "",
    )
