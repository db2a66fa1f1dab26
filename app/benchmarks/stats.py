"""Benchmark figures: the median and spread (p10–p90) of each model's TTFT and tokens/s over
the repeats, and the comparison of two runs with whether a difference is beyond the noise.

*Beyond the noise*: the 95 % bootstrap interval of the relative change of the medians
(:data:`RESAMPLES` resamples of each run's repeats, a fixed seed so the verdict does not change
between two looks) excludes zero. With fewer than :data:`MIN_REPEATS` successful repeats in
either run the verdict is "too few repeats to tell" (``None``).

>>> a = [BenchResult(0.0, "s", "m", 0, i, ttft_s=0.2, tokens_per_s=v) for i, v in enumerate([50, 51, 49, 50, 52])]
>>> b = [BenchResult(0.0, "s", "m", 0, i, ttft_s=0.2, tokens_per_s=v) for i, v in enumerate([40, 41, 39, 40, 42])]
>>> d = compare(a, b)[0].tokens_per_s
>>> round(d.change, 3), d.beyond_noise
(-0.2, True)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.benchmarks.records import BenchResult

RESAMPLES = 2000
MIN_REPEATS = 3


@dataclass(frozen=True, slots=True)
class Spread:
    n: int
    median: float
    p10: float
    p90: float


def spread(values: Sequence[float]) -> Spread | None:
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(data):
        return None
    p10, median, p90 = np.percentile(data, [10, 50, 90])
    return Spread(len(data), float(median), float(p10), float(p90))


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One target's repeats (all prompts together)."""

    key: str                 # "model" or "model @ server" when a run has it on two servers
    server: str
    model: str
    runs: int
    errors: int
    ttft: Spread | None
    tokens_per_s: Spread | None
    joules_per_token: float | None
    energy_source: str
    values: dict[str, list[float]]   # the successful repeats' figures, for comparisons


def summarize(results: Sequence[BenchResult]) -> list[ModelSummary]:
    servers_of: dict[str, set[str]] = {}
    for r in results:
        servers_of.setdefault(r.model, set()).add(r.server)
    groups: dict[tuple[str, str], list[BenchResult]] = {}
    for r in results:
        groups.setdefault((r.server, r.model), []).append(r)
    out = []
    for (server, model), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ok = [r for r in rows if r.ok]
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        speed = [r.tokens_per_s for r in ok if r.tokens_per_s is not None]
        with_energy = [r for r in ok if r.energy_j is not None and r.completion_tokens]
        tokens = sum(r.completion_tokens or 0 for r in with_energy)
        joules = sum(r.energy_j or 0.0 for r in with_energy)
        key = model if len(servers_of[model]) == 1 else f"{model} @ {server}"
        out.append(ModelSummary(key, server, model, len(rows), len(rows) - len(ok), spread(ttft), spread(speed),
                                joules / tokens if tokens else None,
                                with_energy[0].energy_source if with_energy else "",
                                {"ttft_s": ttft, "tokens_per_s": speed}))
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    """B against A for one figure: the relative change of the medians and its 95 % interval."""

    a: Spread
    b: Spread
    change: float                 # (median B / median A) - 1
    low: float | None
    high: float | None
    beyond_noise: bool | None     # None: too few repeats to tell
    lower_is_better: bool

    @property
    def better(self) -> bool:
        return (self.change < 0) == self.lower_is_better


@dataclass(frozen=True, slots=True)
class Comparison:
    key: str
    ttft: Difference | None
    tokens_per_s: Difference | None
    a: ModelSummary | None
    b: ModelSummary | None


def _difference(a_values: list[float], b_values: list[float], lower_is_better: bool,
                rng: np.random.Generator) -> Difference | None:
    a, b = spread(a_values), spread(b_values)
    if a is None or b is None or a.median == 0:
        return None
    change = b.median / a.median - 1.0
    if a.n < MIN_REPEATS or b.n < MIN_REPEATS:
        return Difference(a, b, change, None, None, None, lower_is_better)
    xa = np.asarray(a_values)[rng.integers(0, a.n, size=(RESAMPLES, a.n))]
    xb = np.asarray(b_values)[rng.integers(0, b.n, size=(RESAMPLES, b.n))]
    medians_a = np.median(xa, axis=1)
    ratios = np.median(xb, axis=1) / np.where(medians_a == 0, np.nan, medians_a) - 1.0
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return Difference(a, b, change, float(low), float(high), bool(low > 0 or high < 0), lower_is_better)


def compare(a: Sequence[BenchResult], b: Sequence[BenchResult]) -> list[Comparison]:
    """Each model of either run, B against A (matched by model, or model @ server)."""
    rng = np.random.default_rng(0)
    left = {s.key: s for s in summarize(a)}
    right = {s.key: s for s in summarize(b)}
    out = []
    for key in sorted(set(left) | set(right)):
        sa, sb = left.get(key), right.get(key)
        ttft = speed = None
        if sa is not None and sb is not None:
            ttft = _difference(sa.values["ttft_s"], sb.values["ttft_s"], True, rng)
            speed = _difference(sa.values["tokens_per_s"], sb.values["tokens_per_s"], False, rng)
        out.append(Comparison(key, ttft, speed, sa, sb))
    return out


def verdict(d: Difference, short: bool = False) -> str:
    """In words: better or worse, and whether the repeats' noise could explain it."""
    if d.beyond_noise is None:
        return "too few repeats" if short else "too few repeats to tell"
    if not d.beyond_noise:
        return "noise" if short else "within the noise"
    return ("better" if d.better else "worse") + ("" if short else ", beyond the noise")


def change_text(d: Difference) -> str:
    """``-19 % (-22 … -15 %)``: the change of the medians and its 95 % interval."""
    text = f"{d.change:+.1%}"
    if d.low is not None and d.high is not None:
        text += f" ({d.low:+.0%} … {d.high:+.0%})"
    return text


def spread_text(s: Spread | None, digits: int = 3) -> str:
    """``48.2 (46.9–49.0)``: median and p10–p90."""
    if s is None:
        return "—"
    return f"{s.median:.{digits}g} ({s.p10:.{digits}g}–{s.p90:.{digits}g})"
