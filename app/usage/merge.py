"""One figure per bucket, server and model from the two origins of :mod:`app.usage.rollup`:
the rule that keeps a request from being counted twice.

**Which source counts** (never both): per 15-minute bucket, session and server, a figure the
server's own counters give (llama.cpp and vLLM ``/metrics``: prompt and completion tokens,
vLLM also requests, both busy time) is taken from the counters, and what the proxy, prompt
tests and benchmarks measured for that server in that bucket is kept as the part of it that was
measured per request (``*_measured``). Figures no counter gives (errors, requests on llama.cpp,
anything on Ollama or a plain OpenAI-compatible server, or a server whose ``/metrics`` was
off) come from the requests. So a request seen by the proxy and by the server's counters counts
once, and traffic that bypassed the proxy still counts.

* A llama.cpp server serves one model whatever name a client sends: when a server's counters
  name exactly one model in a bucket, its requests are counted under that model.
* Counters rise when a request ends and requests count when they start, so near a period's
  edge the measured part can differ from the total by a request; llama.cpp's prompt counter
  leaves out prompt tokens served from its cache, so it can be far below the prompt tokens the
  requests reported.
* Busy time is the exception to "the counter wins": the servers' busy gauges are read once a
  second and can miss short requests, so a bucket's busy time is the larger of the two.
* Energy per token comes from the same origin as the completion tokens.

Each figure carries where it came from as bits: :data:`FROM_REQUESTS`, :data:`FROM_SERVER`.
"""
from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields

from app.usage.compute import COUNTERS, REQUESTS, UsageRow

FROM_REQUESTS, FROM_SERVER = 1, 2
METRICS = ("requests", "prompt_tokens", "completion_tokens", "busy_s")
ENERGY_BITS = {"gpu_counter": 1, "gpu_power": 2, "cpu_rapl": 4}


@dataclass(slots=True)
class MergedRow:
    """A bucket's figures for one session, server and model, each from one origin."""

    bucket: float
    session_id: int | None
    server: str
    model: str
    requests: float = 0.0
    requests_measured: float = 0.0
    requests_from: int = 0
    errors: int = 0
    prompt_tokens: float = 0.0
    prompt_tokens_measured: float = 0.0
    prompt_tokens_from: int = 0
    completion_tokens: float = 0.0
    completion_tokens_measured: float = 0.0
    completion_tokens_from: int = 0
    estimated_tokens: int = 0
    busy_s: float = 0.0
    busy_s_measured: float = 0.0
    busy_s_from: int = 0
    energy_j: float = 0.0
    energy_tokens: float = 0.0
    energy_from: int = 0        # ENERGY_BITS of the sources
    energy_shared: int = 0


MERGED_COLUMNS = tuple(f.name for f in fields(MergedRow))
as_tuple = operator.attrgetter(*MERGED_COLUMNS)
"""A merged row as a plain tuple in :data:`MERGED_COLUMNS` order (``dataclasses.astuple`` deep-copies:
30x slower)."""


def _summed(rows: list[UsageRow]) -> UsageRow:
    out = UsageRow(rows[0].bucket, rows[0].session_id, rows[0].origin, rows[0].server, rows[0].model)
    for r in rows:
        for name in (*METRICS, "errors", "estimated_tokens", "energy_j", "energy_tokens"):
            value = getattr(r, name)
            if value is not None:
                out.add(name, value)
        out.energy_source = out.energy_source or r.energy_source
        out.energy_shared |= r.energy_shared
    return out


def merge_sources(rows: Iterable[UsageRow]) -> list[MergedRow]:
    """The rule above, applied to the rows of :func:`app.usage.rollup.compute_usage`."""
    grouped: dict[tuple[float, int | None, str], dict[str, dict[str, list[UsageRow]]]] = defaultdict(
        lambda: {COUNTERS: defaultdict(list), REQUESTS: defaultdict(list)})
    for r in rows:
        grouped[(r.bucket, r.session_id, r.server)][r.origin][r.model].append(r)
    out = []
    for (bucket, session, server), origins in grouped.items():
        counters = {m: _summed(rs) for m, rs in origins[COUNTERS].items()}
        by_model = origins[REQUESTS]
        if len(counters) == 1 and by_model:  # llama.cpp: one model, whatever the clients called it
            by_model = {next(iter(counters)): [r for rs in by_model.values() for r in rs]}
        requests = {m: _summed(rs) for m, rs in by_model.items()}
        covered = {m for m in METRICS if any(getattr(c, m) is not None for c in counters.values())}
        for model in sorted(set(counters) | set(requests)):
            out.append(_merge_one(MergedRow(bucket, session, server, model), counters.get(model),
                                  requests.get(model), covered))
    return out


def _merge_one(row: MergedRow, c: UsageRow | None, q: UsageRow | None, covered: set[str]) -> MergedRow:
    for m in METRICS:
        measured = getattr(q, m) if q is not None else None
        if m in covered:
            counted = (getattr(c, m) or 0.0) if c is not None else 0.0
            setattr(row, f"{m}_measured", measured or 0.0)
            if m == "busy_s" and (measured or 0.0) > counted:  # a once-a-second gauge missed it
                row.busy_s, row.busy_s_from = measured or 0.0, FROM_REQUESTS
            else:
                setattr(row, m, counted)
                setattr(row, f"{m}_from", FROM_SERVER)
        elif measured is not None:
            setattr(row, m, measured)
            setattr(row, f"{m}_measured", measured)
            setattr(row, f"{m}_from", FROM_REQUESTS)
    if q is not None:
        row.errors = int(q.errors or 0)
        row.estimated_tokens = int(q.estimated_tokens or 0)
    energy = c if "completion_tokens" in covered else q
    if energy is not None and energy.energy_j is not None:
        row.energy_j = energy.energy_j
        row.energy_tokens = energy.energy_tokens or 0.0
        row.energy_from = ENERGY_BITS.get(energy.energy_source, 0)
        row.energy_shared = int(energy.energy_shared)
    return row
