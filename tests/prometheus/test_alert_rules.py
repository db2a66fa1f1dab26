"""llmmon's alert rules as a Prometheus rule file: promtool accepts it, the real Prometheus loads
and evaluates every rule, and it fires the same alerts (rule, labels, value) that the machine's
own llmmon engine fires on the same data."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.alerts.prometheus_rules import convert, rule_file_text
from app.alerts.rules import DEFAULT_RULES_PATH, Baseline, Rule, load_rules
from tests.prometheus.conftest import Fleet
from tests.prometheus.prometheus import PrometheusServer, binary
from tests.support import query, wait_until


def expected(fleet: Fleet) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Alerts on data that does not change: gpu-box-a's Ollama has gemma4 81 % on the GPU
    (shipped rule, no "for"); its vLLM has one request waiting (the user's rule, "for = 3s")."""
    return {("model_offloaded", (("model", "gemma4"), ("server", fleet.server("ollama")))),
            ("vllm_queue_nonempty", (("model", "meta-llama/Llama-3.1-8B-Instruct"), ("server", fleet.server("vllm"))))}

PROMETHEUS_LABELS = {"alertname", "severity", "instance", "job"}


def promtool(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_promtool_accepts_the_written_rules(fleet: Fleet) -> None:
    checked = promtool(fleet.rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = load_rules(fleet.a.home / "config" / "alert_rules.toml").rules
    written = [w for w in convert(rules) if w.expr]
    assert len(written) == len(rules) == len(load_rules(DEFAULT_RULES_PATH).rules) + 1  # the shipped and the user's
    assert f"SUCCESS: {len(written)} rules found" in checked.stdout


def firing_in_prometheus(prometheus: PrometheusServer) -> dict[tuple, dict]:
    out = {}
    for alert in prometheus.alerts():
        if alert["state"] == "firing" and alert["labels"].get("instance") == "gpu-box-a":
            labels = tuple(sorted((k, v) for k, v in alert["labels"].items() if k not in PROMETHEUS_LABELS))
            out[(alert["labels"]["alertname"], labels)] = alert
    return out


def firing_in_llmmon(db: Path) -> dict[tuple, tuple[str, float]]:
    rows = query(db, "SELECT rule, labels, severity, value FROM alert_events WHERE state = 'firing'")
    return {(rule, tuple(sorted(json.loads(labels).items()))): (severity, value)
            for rule, labels, severity, value in rows}


def test_prometheus_fires_what_llmmon_fires(fleet: Fleet, prometheus: PrometheusServer) -> None:
    wanted = expected(fleet)
    wait_until(lambda: wanted <= set(firing_in_prometheus(prometheus)), timeout=30,
               what="Prometheus to fire model_offloaded and the user's vllm_queue_nonempty")
    wait_until(lambda: wanted <= set(firing_in_llmmon(fleet.a.db)), timeout=30,
               what="gpu-box-a's own llmmon to fire the same alerts")
    prom, own = firing_in_prometheus(prometheus), firing_in_llmmon(fleet.a.db)
    for key in wanted:
        severity, value = own[key]
        assert prom[key]["labels"]["severity"] == severity
        assert float(prom[key]["value"]) == value  # the same number: 0.809..., 1.0
    offloaded = prom[("model_offloaded", dict(wanted)["model_offloaded"])]["annotations"]
    assert offloaded["summary"] == "Model partly offloaded to CPU"
    assert offloaded["description"] == (f"{fleet.server('ollama')}: only 80.91% of gemma4 is on the GPU; "
                                        "the rest runs on the CPU, much slower")
    groups = prometheus.api("/api/v1/rules")["groups"]
    evaluated = [r for g in groups for r in g["rules"]]
    assert len(evaluated) == len(load_rules(DEFAULT_RULES_PATH).rules) + 1
    assert all(r["health"] == "ok" for r in evaluated), [(r["name"], r.get("lastError")) for r in evaluated]


PROMQL_WORDS = ("inf", "nan", "bool", "on", "ignoring", "group_left", "group_right", "atan2", "and", "or",
                "unless", "by", "without", "offset", "sum", "avg", "count", "min", "max", "group", "stddev",
                "stdvar", "topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio", "start", "end",
                "step", "rate", "time", "vector", "infinity", "nan_", "inf2")
"""Metric names PromQL's grammar reads (or may read) as something else: numbers (``Inf``, ``NaN``),
keywords (Prometheus' ``promql/parser/lex.go`` key table), function names; and near misses."""


def written_in_each_way(metric: str) -> list[Rule]:
    """A threshold rule (with a glob matcher), a baseline rule and an absent_for rule on ``metric``."""
    return [Rule(f"{metric}_high", metric, ">", 1.0, "avg", 60.0, match=(("server", ("ollama@*",)),)),
            Rule(f"{metric}_drop", metric, "<", 0.5, "p95", 60.0, baseline=Baseline(window=3600.0)),
            Rule(f"{metric}_gone", metric, absent_for=60.0)]


def test_metrics_named_like_promql_numbers_and_keywords(tmp_path: Path) -> None:
    """A metric named ``INF``, ``NaN``, ``bool``, ``on``... (any case) is still read as a metric:
    promtool used to refuse ``avg_over_time(INF[1m]) > 1`` ("comparisons between scalars must
    use BOOL modifier")."""
    rules = [r for word in PROMQL_WORDS for metric in (word, word.upper(), word.title())
             for r in written_in_each_way(metric)]
    path = tmp_path / "rules.yml"
    path.write_text(rule_file_text(rules, "keywords"), encoding="utf-8")
    checked = promtool(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


names = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)
promql_words = st.sampled_from(PROMQL_WORDS).flatmap(lambda w: st.sampled_from([w, w.upper(), w.title()]))
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
patterns = st.text(st.sampled_from("ab@.:*?[]!-_0^$|()+{}\\\"' \né#&~"), min_size=1, max_size=12)
windows = st.sampled_from([0.5, 1.0, 30.0, 60.0, 90.0, 3600.0])
rules = st.builds(
    Rule, name=texts.filter(bool), metric=st.one_of(names, promql_words, texts),
    op=st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
    threshold=st.one_of(st.none(), st.floats(-1e6, 1e6), st.tuples(st.floats(0, 1), st.floats(1, 2))),
    aggregation=st.sampled_from(["last", "avg", "min", "max", "rate", "median", "p95", "p99.9"]),
    window=st.one_of(st.just(0.0), windows), for_s=st.sampled_from([0.0, 1.0, 300.0]),
    match=st.lists(st.tuples(st.one_of(names, texts), st.lists(patterns, min_size=1, max_size=3).map(tuple)),
                   max_size=3).map(tuple),
    absent_for=st.one_of(st.none(), windows), baseline=st.one_of(st.none(), st.builds(Baseline, window=windows)),
    message=texts, title=texts, enabled=st.booleans())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rules, max_size=12))
def test_any_rules_give_a_file_promtool_accepts(tmp_path: Path, written: list[Rule]) -> None:
    """Whatever the rules (odd names, PromQL words as metrics, glob characters, quotes, braces in
    messages), the file is valid and has one Prometheus rule per expressible rule; the rest are
    comments."""
    path = tmp_path / "rules.yml"
    path.write_text(rule_file_text(written, "generated"), encoding="utf-8")
    checked = promtool(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr + path.read_text()
    assert f"SUCCESS: {sum(1 for w in convert(written) if w.expr)} rules found" in checked.stdout
