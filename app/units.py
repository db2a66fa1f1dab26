"""Values with their units, written for people: ``format_value(3.2e9, "B") → "2.98 GiB"``, and
the unit a series carries in its name (docs/metrics.md: ``_seconds``, ``_bytes``, ``_percent``,
``_ratio``...), so the alert sentences and the charts write a value the same way. Qt-free: the
core (alert messages) and the widgets (charts, header strip) share it.

>>> metric_value_text("gpu_memory_used_bytes", 3 * 2 ** 30), metric_value_text("llm_error_ratio", 0.125)
('3.00 GiB', '12.5 %')
"""
from __future__ import annotations

import math

BINARY_UNITS = [(2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B")]

# Name endings of docs/metrics.md and the unit each means (longest ending first).
_SUFFIX_UNITS = (
    ("_bytes_per_second", "B/s"), ("_tokens_per_second", "tokens/s"), ("_per_second", "/s"),
    ("_seconds", "s"), ("_bytes", "B"), ("_percent", "%"), ("_ratio", "ratio"), ("_celsius", "°C"),
    ("_watts", "W"), ("_hertz", "Hz"),
)


def metric_unit(metric: str) -> str:
    """The unit a series' name carries: ``"s"``, ``"B"``, ``"%"``, ``"ratio"`` (0–1, written as
    a percentage), ``"°C"``, ``"tokens/s"``...; ``""`` for a plain count."""
    return next((unit for suffix, unit in _SUFFIX_UNITS if metric.endswith(suffix)), "")


def format_value(value: float, unit: str) -> str:
    """A human-readable value with its unit: binary prefixes for bytes, ms for small seconds."""
    if not math.isfinite(value):
        return "—"
    if unit in ("B", "B/s"):
        scale, name = next((u for u in BINARY_UNITS if abs(value) >= u[0]), BINARY_UNITS[-1])
        per = unit[1:]
        return f"{value / scale:.2f} {name}{per}" if scale > 1 else f"{value:.0f} B{per}"
    if unit == "s" and abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    if unit == "ratio":
        return format_value(value * 100, "%")
    if unit == "%":
        return f"{value:.1f} %"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def metric_value_text(metric: str, value: float) -> str:
    """``value`` of series ``metric`` written with the unit its name carries."""
    return format_value(value, metric_unit(metric))
