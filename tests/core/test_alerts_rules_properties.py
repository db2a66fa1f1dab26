"""Any rule file, however wrong: parsing never raises, every [[rule]] table becomes a rule or a
problem on one of its own lines, and the engine evaluates every rule that was kept without a
single evaluation error."""
from __future__ import annotations

import re

import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.alerts.engine import AlertEngine
from app.alerts.rules import AGGREGATIONS, OPS, SEVERITIES, parse_rules, rule_chunks
from app.buffers import LiveBuffers
from app.records import Sample

TEXT = st.text(st.characters(codec="utf-8"), max_size=10)  # TOML holds no lone surrogates
NAMES = st.text("abcxyz_ -.\"'", min_size=1, max_size=6)
SCALARS = st.one_of(st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**310),
                    st.floats(), TEXT, st.datetimes(), st.times())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                      max_leaves=5)
DURATIONS = st.one_of(st.sampled_from(["30s", "5m", "1h30m", "250ms", "366d", "367d", "", "five", "9" * 320 + "s"]),
                      st.integers(-1, 40_000_000), st.floats())
METRICS = st.sampled_from(["gpu_temperature_celsius", "system_cpu_percent", "m"])
PLAUSIBLE = {
    "name": NAMES, "title": TEXT, "description": TEXT, "metric": METRICS | TEXT,
    "match": st.dictionaries(st.sampled_from(["gpu", "server", "model"]), TEXT | st.lists(TEXT, max_size=2),
                             max_size=2),
    "aggregation": st.sampled_from([*AGGREGATIONS, "p95", "p99.9", "p100", "p0", "x"]),
    "window": DURATIONS, "for": DURATIONS, "cooldown": DURATIONS, "absent_for": DURATIONS,
    "op": st.sampled_from([*OPS, "=>"]),
    "threshold": st.floats() | st.integers() | st.lists(st.floats(allow_nan=False) | st.integers(), max_size=3),
    "severity": st.sampled_from([*SEVERITIES, "panic"]),
    "baseline": st.fixed_dictionaries({}, optional={
        "aggregation": st.sampled_from(["median", "avg", "p90", "x"]), "window": DURATIONS,
        "min_samples": st.integers(-1, 10**20), "typo": VALUES}),
    "message": st.sampled_from(["{value:.1f} °C on {gpu}", "{x.y}", "{0[}", "{value:.0f} > {threshold}", "{!z}",
                                "{value:>{threshold}}"]) | TEXT,
    "enabled": st.booleans(),
}
GOOD_DURATIONS = st.sampled_from(["30s", "5m", "1h30m", "250ms", "0s", "366d"]) | st.integers(0, 86_400)
VALID = st.fixed_dictionaries(
    {"name": NAMES, "metric": METRICS, "threshold": st.floats(-1e6, 1e6) | st.integers(-1000, 1000)},
    optional={"aggregation": st.sampled_from([*AGGREGATIONS, "p95", "p99.9"]), "window": GOOD_DURATIONS,
              "for": GOOD_DURATIONS, "cooldown": GOOD_DURATIONS, "absent_for": GOOD_DURATIONS,
              "op": st.sampled_from([op for op in OPS if op != "between"]), "severity": st.sampled_from(SEVERITIES),
              "message": st.sampled_from(["{value:.1f} °C on {gpu}", "{value:.0f} > {threshold}", "{rule}: {x}"]),
              "match": st.dictionaries(st.sampled_from(["gpu", "server"]), st.sampled_from(["0", "ollama@*"]),
                                       max_size=2),
              "enabled": st.booleans(), "title": TEXT})


def corrupted(rule: dict) -> st.SearchStrategy[dict]:
    """``rule`` with one key given a plausible or an arbitrary value (or a misspelt key added)."""
    return st.sampled_from([*PLAUSIBLE, "threshhold"]).flatmap(
        lambda key: (PLAUSIBLE.get(key, VALUES) | VALUES).map(lambda value: {**rule, key: value}))


RULES = VALID | VALID.flatmap(corrupted)
NOTIFICATIONS = st.fixed_dictionaries({}, optional={
    "desktop": st.booleans() | VALUES, "tray": st.booleans() | VALUES,
    "webhook": st.sampled_from(["off", "json", "slack", "email"]) | VALUES, "group_seconds": DURATIONS | VALUES})
DOCUMENTS = st.fixed_dictionaries({"rule": st.lists(RULES, max_size=4)},
                                  optional={"notifications": NOTIFICATIONS | VALUES, "extra": VALUES})
LINE = re.compile(r"^alert_rules\.toml line (\d+): ")


def check(text: str) -> None:
    result = parse_rules(text)
    event(f"rules kept: {min(len(result.rules), 2)}{'+' if len(result.rules) > 2 else ''}")
    event(f"rules skipped: {min(sum('(rule skipped)' in p for p in result.problems), 2)}")
    n_lines = max(1, len(text.splitlines()))
    lines = []
    for problem in result.problems:
        m = LINE.match(problem)
        assert m, problem
        lines.append(int(m.group(1)))
        assert 1 <= lines[-1] <= n_lines, problem
    # Each [[rule]] table is a kept rule (its line is the header's) or a problem on its lines.
    _, chunks = rule_chunks(text)
    kept = {r.line for r in result.rules}
    for chunk in chunks:
        end = chunk.first + len(chunk.lines) - 1
        assert chunk.first in kept or any(chunk.first <= n <= end for n in lines), (chunk, result.problems)
    # The engine evaluates every kept rule on data for its metric without an error.
    buffers = LiveBuffers()
    engine = AlertEngine(buffers, result.rules)
    for i, t in enumerate((0.0, 30.0, 3600.0, 90_000.0)):
        buffers.add(Sample(r.metric, [1e308, -5.0, 0.0, float("inf")][i], t, r.exact_labels())
                    for r in result.rules)
        engine.evaluate(t)
    assert engine.problems == []  # no rule failed to evaluate
    engine.alerts()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_any_rule_document(document: dict) -> None:
    check(tomli_w.dumps(document))


@settings(max_examples=200, deadline=None)
@given(document=DOCUMENTS, cut=st.integers(0, 2000), junk=st.text(max_size=8))
def test_any_damaged_rule_file(document: dict, cut: int, junk: str) -> None:
    """The same documents with text cut out or inserted anywhere (a half-saved file, a stray key)."""
    text = tomli_w.dumps(document)
    cut %= len(text) + 1
    check(text[:cut] + junk + text[cut + len(junk) // 2:])
