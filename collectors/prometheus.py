"""Prometheus text → numbers llmmon can chart: pure functions, no I/O, no clocks.

A scrape is flattened into a :data:`Scrape` (sample name and labels → value). Two scrapes give:

- counter increases and rates, where a counter that went *down* means the server restarted
  (its counters started again from zero), so the increase is the new value, never negative;
- windowed histogram quantiles, computed from the *difference* of two scrapes' cumulative
  bucket counts the way PromQL's ``histogram_quantile(q, rate(x_bucket[w]))`` does, with
  linear interpolation inside the bucket that holds the rank.

>>> before = {("lat_bucket", (("le", "0.1"),)): 2.0, ("lat_bucket", (("le", "+Inf"),)): 2.0}
>>> after = {("lat_bucket", (("le", "0.1"),)): 2.0, ("lat_bucket", (("le", "+Inf"),)): 6.0}
>>> window = bucket_increase(histogram_buckets(before, "lat")[()], histogram_buckets(after, "lat")[()])
>>> window
[(0.1, 0.0), (inf, 4.0)]
>>> histogram_quantile(0.5, window)  # every new observation is above the last finite bound
0.1
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from app.records import Labels, labels_of

__all__ = ["Scrape", "Buckets", "parse_scrape", "counter_increase", "counter_rate",
           "histogram_buckets", "bucket_increase", "histogram_quantile"]

Scrape = dict[tuple[str, Labels], float]
"""One scrape: ``(sample name, labels) → value`` (histogram samples keep their ``_bucket``,
``_count`` and ``_sum`` suffixes, counters their ``_total``)."""

Buckets = list[tuple[float, float]]
"""A histogram's cumulative buckets as ``(upper bound, count)``, sorted by bound, ``+Inf`` last."""

_META_PREFIXES = ("# HELP ", "# TYPE ")


def parse_scrape(text: str, prefix: str | tuple[str, ...] = "") -> Scrape:
    """Parse Prometheus exposition text with ``prometheus_client``'s parser.

    Only metrics whose name starts with ``prefix`` (or one of several) are kept; filtering the
    lines first spares the parser, the costly part, the lines nobody reads. Only finite values
    are kept (``NaN`` means "no value" in the format; llmmon charts numbers).

    Raises:
        ValueError: the text is not Prometheus exposition format (whatever the parser raised:
            it has its own ways of failing on garbage, and callers need only this one).
    """
    if prefix:
        prefixes = (prefix,) if isinstance(prefix, str) else prefix
        keep = prefixes + tuple(meta + p for meta in _META_PREFIXES for p in prefixes)
        text = "\n".join(line for line in text.splitlines() if line.startswith(keep))
    scrape: Scrape = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                value = float(sample.value)
                if math.isfinite(value):
                    scrape[(sample.name, labels_of(sample.labels))] = value
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    return scrape


def counter_increase(previous: float, current: float) -> float:
    """How much a counter grew between two reads; a drop means it was reset to zero since.
    Never negative: a counter below zero is garbage and counts as no increase.

    >>> counter_increase(100.0, 130.0)
    30.0
    >>> counter_increase(100.0, 7.0)  # the server restarted and has counted 7 since
    7.0
    >>> counter_increase(100.0, -5e6)
    0.0
    """
    return max(0.0, current - previous if current >= previous else current)


def counter_rate(previous: float, current: float, elapsed_s: float) -> float | None:
    """Per-second rate of a counter between two reads ``elapsed_s`` apart (``None`` if the
    reads are not apart in time)."""
    if elapsed_s <= 0:
        return None
    return counter_increase(previous, current) / elapsed_s


def _bound(text: str) -> float:
    bound = math.inf if text in ("+Inf", "Inf", "inf") else float(text)
    if math.isnan(bound):
        raise ValueError("NaN bucket bound")
    return bound


def histogram_buckets(scrape: Scrape, name: str, keep: Iterable[str] | None = None) -> dict[Labels, Buckets]:
    """The cumulative buckets of histogram ``name`` per label set: all its labels but ``le``,
    or only those in ``keep``; series that differ only in the other labels are summed (e.g.
    vLLM's per-``engine`` series of one model)."""
    kept = None if keep is None else set(keep) - {"le"}
    grouped: dict[Labels, dict[float, float]] = {}
    bucket_name = name + "_bucket"
    for (sample, labels), value in scrape.items():
        if sample != bucket_name:
            continue
        le = dict(labels).get("le")
        if le is None:
            continue
        try:
            bound = _bound(le)
        except ValueError:
            continue  # a malformed bound: skip that bucket rather than the whole histogram
        key = tuple((k, v) for k, v in labels if k != "le" and (kept is None or k in kept))
        by_bound = grouped.setdefault(key, {})
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    return {key: sorted(by_bound.items()) for key, by_bound in grouped.items()}


def bucket_increase(previous: Buckets | None, current: Buckets) -> Buckets:
    """The observations that arrived between two reads of one histogram, as buckets.

    If any cumulative count went down the server restarted in between: everything it counted
    since is new, so the current buckets are the increase. Buckets missing from ``previous``
    count from zero.
    """
    if not previous:
        return list(current)
    before = dict(previous)
    if any(count < before.get(bound, 0.0) for bound, count in current):
        return list(current)
    return [(bound, count - before.get(bound, 0.0)) for bound, count in current]


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q``-quantile (0–1) of the observations in cumulative ``buckets``, as PromQL
    computes it: find the bucket holding rank ``q × total`` and interpolate linearly between its
    lower and upper bound (the first bucket starts at 0). A rank in the ``+Inf`` bucket gives
    the highest finite bound. ``None`` when there are no observations.

    >>> histogram_quantile(0.5, [(1.0, 2.0), (2.0, 6.0), (math.inf, 6.0)])
    1.25
    """
    if not buckets or not 0.0 <= q <= 1.0:
        return None
    total = buckets[-1][1]
    if total <= 0 or not math.isinf(buckets[-1][0]):
        return None  # no observations, or no +Inf bucket: the total is unknown
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound  # above every finite bound: the best we can say
            if bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
