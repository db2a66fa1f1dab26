"""What an alert says, in words: "GPU 0 temperature is 91 °C, above 85 °C for 2 min".

A user reads an alert in a notification, the tray, a webhook message and the Alerts tab; none of
them may show a query (``llamacpp_busy_slots{server=…} is 1 (last > 0)``). This module writes the
sentence of an alert from its rule, its series' labels, the observed value and how long the
condition has held:

* a rule's ``message`` template is filled in with the labels (``{server}`` and ``{source}`` the
  way a person says a server: "llama.cpp on :8080"), ``{value}`` (the number, for format specs
  such as ``{value:.0%}``), ``{value_text}`` and ``{threshold_text}`` (with their units) and
  ``{held}`` ("30 s", "2 min");
* a rule without one gets a generated sentence: what is measured, of what, its value with the
  unit its metric's name carries (``_seconds``, ``_bytes``, ``_percent``, ``_ratio``...), the
  limit in words and the time it has held.

>>> from app.alerts.rules import Rule
>>> rule = Rule("hot", "gpu_temperature_celsius", ">", 85.0, for_s=120)
>>> firing_sentence(rule, (("gpu", "0"),), 91.0, 120.0)
'GPU 0 temperature is 91 °C, above 85 °C for 2 min'
>>> busy = Rule("busy", "llamacpp_busy_slots", ">", 0.0, for_s=30)
>>> firing_sentence(busy, (("server", "llamacpp@127.0.0.1:8080"),), 2.0, 30.0)
'llama.cpp on :8080: busy slots is 2, above 0 for 30 s'
"""
from __future__ import annotations

from collections.abc import Callable

from app.alerts.rules import Rule
from app.durations import spoken_duration
from app.records import Labels
from app.server_names import spoken_server
from app.units import format_value, metric_unit

# What a series measures, where its name alone reads badly (the rest: the name in words).
METRIC_NOUNS = {
    "llmmon_source_up": "answering",
    "llm_request_tokens_per_second": "decode speed",
    "llm_tokens_per_second": "generation speed",
    "llm_ttft_seconds": "time to first token",
    "vllm_ttft_seconds": "time to first token",
    "llm_error_ratio": "share of failed requests",
    "gpu_memory_percent": "memory use",
    "system_cpu_percent": "CPU use",
    "system_memory_percent": "memory use",
    "system_swap_percent": "swap use",
    "system_disk_percent": "disk use",
    "ollama_model_gpu_share_ratio": "share on the GPU",
    "vllm_kv_cache_usage_ratio": "KV cache use",
    "llamacpp_requests_deferred": "requests waiting for a slot",
}
_PREFIXES = ("llmmon_", "system_", "llamacpp_", "vllm_", "ollama_", "llm_", "gpu_")
_UNIT_SUFFIXES = ("_per_second", "_seconds", "_bytes", "_percent", "_ratio", "_celsius", "_watts",
                  "_hertz", "_total")
_RELATIONS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below",
              "==": "equal to", "!=": "other than"}
SERVER_LABELS = ("server", "source")   # label values that are server names


def metric_noun(metric: str) -> str:
    """What a series measures, in words: ``"temperature"`` for ``gpu_temperature_celsius``."""
    if metric in METRIC_NOUNS:
        return METRIC_NOUNS[metric]
    name = metric
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
            break
    for suffix in _UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("_", " ").strip() or metric


def value_text(rule: Rule, value: float) -> str:
    """The observed value with its unit (a baseline rule's value is a share of its usual)."""
    if rule.baseline is not None:
        b = rule.baseline
        return f"{value:.0%} of its {b.aggregation} over the last {spoken_duration(b.window)}"
    return format_value(value, metric_unit(rule.metric))


def threshold_text(rule: Rule, threshold: float) -> str:
    """A limit as the user wrote it, with the metric's unit: ``85 °C``, ``90 %``, ``5 s``."""
    unit = "ratio" if rule.baseline is not None else metric_unit(rule.metric)
    if unit == "ratio":
        return f"{threshold * 100:g} %"
    if unit in ("B", "B/s"):
        return format_value(threshold, unit)
    return f"{threshold:g} {unit}".strip()


def limit_text(rule: Rule) -> str:
    """The rule's condition in words: ``"above 85 °C"``, ``"between 0 % and 100 %"``."""
    if isinstance(rule.threshold, tuple):
        low, high = rule.threshold
        return f"between {threshold_text(rule, low)} and {threshold_text(rule, high)}"
    if rule.threshold is None:
        return ""
    return f"{_RELATIONS.get(rule.op, rule.op)} {threshold_text(rule, rule.threshold)}"


def subject(rule: Rule, labels: Labels) -> str:
    """What the alert is about: ``"llama.cpp on :8080: busy slots"``, ``"GPU 0 temperature"``."""
    have = dict(labels)
    server = next((spoken_server(have[k]) for k in SERVER_LABELS if have.get(k)), "")
    noun = metric_noun(rule.metric)
    if "quantile" in have:
        noun = f"p{float(have['quantile']) * 100:g} {noun}"
    owner = []
    if "model" in have:
        owner.append(have["model"])
    if "gpu" in have:
        owner.append(f"GPU {have['gpu']}")
    if "core" in have:
        owner.append(f"CPU core {have['core']}")
    if "mount" in have:
        owner.append(f"disk {have['mount']}")
    text = " ".join([*owner, noun])
    if rule.metric == "llmmon_source_up":
        return server or "a monitored server"
    if server:
        return f"{server}: {text}"
    return text if owner else text[:1].upper() + text[1:]  # a model's or disk's name as written


def with_names(labels: Labels, names: Callable[[str], str]) -> Labels:
    """``labels`` with each server (``server``, ``source``: its identity) under ``names(identity)``,
    the name the user gave it; an identity without one stays, and is said "llama.cpp on :8080".

    >>> with_names((("model", "m"), ("server", "llamacpp@127.0.0.1:8080")), {"llamacpp@127.0.0.1:8080": "gemma"}.get)
    (('model', 'm'), ('server', 'gemma'))
    """
    return tuple((k, names(v) or v) if k in SERVER_LABELS else (k, v) for k, v in labels)


def series_text(labels: Labels) -> str:
    """Which series an alert watches, in words: ``"llama.cpp on :8080, gemma"``, ``"GPU 0"``.

    >>> series_text((("gpu", "0"),)), series_text((("kind", "vllm"), ("source", "vllm@127.0.0.1:8000")))
    ('GPU 0', 'vLLM on :8000')
    """
    have = dict(labels)
    words = [spoken_server(have[k]) for k in SERVER_LABELS if have.get(k)][:1]
    named = {"gpu": "GPU {}", "core": "CPU core {}", "mount": "disk {}", "model": "{}"}
    words += [named[k].format(have[k]) for k in ("model", "gpu", "core", "mount") if k in have]
    if "quantile" in have:
        words.append(f"p{float(have['quantile']) * 100:g}")
    shown = {*SERVER_LABELS, *named, "quantile", "kind"}
    words += [f"{k}={v}" for k, v in labels if k not in shown]
    return ", ".join(words)


def template_fields(rule: Rule, labels: Labels, value: float | None, held: float) -> dict[str, object]:
    """What a ``message`` template may use (see the module docstring)."""
    fields: dict[str, object] = dict(labels)
    for key in SERVER_LABELS:
        if key in fields:
            fields[key] = spoken_server(str(fields[key]))
    single = float(rule.threshold) if isinstance(rule.threshold, (int, float)) else None
    fields.update(value=value, threshold=rule.threshold, rule=rule.label, held=spoken_duration(held),
                  value_text="no data" if value is None else value_text(rule, value),
                  threshold_text=limit_text(rule) if single is None else threshold_text(rule, single))
    return fields


def _filled(rule: Rule, labels: Labels, value: float | None, held: float) -> str | None:
    if not rule.message:
        return None
    template = rule.message[:1].upper() + rule.message[1:]  # "the disk..." starts a sentence
    try:
        text = template.format_map(template_fields(rule, labels, value, held))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None  # e.g. {value:.0f} without a value, or a label this series lacks: generated text
    return text


def firing_sentence(rule: Rule, labels: Labels, value: float | None, held: float,
                    absent: bool = False) -> str:
    """The sentence of a firing alert: the rule's template filled in, or a generated one."""
    filled = _filled(rule, labels, value, held)
    if filled is not None:
        return filled
    about = subject(rule, labels)
    if absent and value is None:
        return f"{about}: no data for {spoken_duration(rule.absent_for or 0)}"
    if value is None:
        return f"{about}: no data in the last {spoken_duration(rule.window)}"
    if rule.metric == "llmmon_source_up":
        return f"{about} has not answered" + (f" for {spoken_duration(held)}" if held >= 1 else "")
    text = f"{about} is {value_text(rule, value)}, {limit_text(rule)}"
    return text + (f" for {spoken_duration(held)}" if held >= 1 else "")


def pending_sentence(rule: Rule, labels: Labels, value: float | None, absent: bool = False) -> str:
    """A pending alert: the condition holds, its ``for`` has not elapsed."""
    about = subject(rule, labels)
    if value is None:
        what = f"{about}: no data" if absent else f"{about}: no data in the last {spoken_duration(rule.window)}"
    else:
        what = f"{about} is {value_text(rule, value)}, {limit_text(rule)}"
    return f"{what}; it fires if this lasts {spoken_duration(rule.for_s)}"


def resolved_sentence(rule: Rule, labels: Labels, value: float | None) -> str:
    """A resolved alert: what the value is now."""
    about = subject(rule, labels)
    if rule.metric == "llmmon_source_up" and value:
        return f"{about} answers again"
    if value is None:
        return f"{about}: no data any more"
    return f"{about} is back to {value_text(rule, value)}"
