"""llmmon rules → Prometheus rules: the PromQL of the shipped rules, the rules that become
comments (and why), message templates, glob matchers, and ``main.py rules --prometheus``.
(promtool and a real Prometheus check the output in tests/prometheus/test_alert_rules.py.)"""
from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.alerts.prometheus_rules import convert, glob_regex, go_template, rule_expr, rule_file_text
from app.alerts.rules import DEFAULT_RULES_PATH, Rule, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, Rule]:
    return {r.name: r for r in load_rules(DEFAULT_RULES_PATH).rules}


def test_shipped_rules_in_promql() -> None:
    rules = shipped()
    assert rule_expr(rules["gpu_hot"]) == "last_over_time(gpu_temperature_celsius[1m]) > 85"
    assert rule_expr(rules["model_offloaded"]) == "last_over_time(ollama_model_gpu_share_ratio[1m]) > 0 < 1"
    assert rule_expr(rules["ttft_p90_high"]) == 'last_over_time(llm_ttft_seconds{quantile="0.9"}[2m]) > 5'
    assert rule_expr(rules["tokens_per_second_drop"]) == (
        "(avg_over_time(llm_request_tokens_per_second[5m]) / "
        "(quantile_over_time(0.5, llm_request_tokens_per_second[1h]) != 0) and "
        "(count_over_time(llm_request_tokens_per_second[1h]) >= 10)) < 0.5")
    up = 'llmmon_source_up{kind=~"ollama|vllm|openai|llamacpp"}'
    assert rule_expr(rules["server_down"]) == (
        f"(last_over_time({up}[2m]) < 1) or (present_over_time({up}[1h]) unless present_over_time({up}[3m]))")


def test_every_shipped_rule_is_written_with_its_for_severity_and_texts() -> None:
    rules = shipped()
    document = yaml.safe_load(rule_file_text(list(rules.values()), "alert_rules.toml"))
    written = {r["alert"]: r for r in document["groups"][0]["rules"]}
    assert set(written) == set(rules)
    assert written["server_down"]["for"] == "30s" and written["server_down"]["labels"] == {"severity": "critical"}
    assert "for" not in written["model_offloaded"]
    assert written["error_rate_high"]["annotations"] == {
        "summary": "Error rate above 10 %",
        "description": "{{ $labels.server }}: {{ $value | humanizePercentage }} of the requests failed, for 5 min",
        "hint": "The Requests tab shows the failed requests; the server's log says why."}
    assert written["gpu_hot"]["annotations"]["description"] == (
        'GPU {{ $labels.gpu }} is at {{ printf "%.0f" $value }} °C, above 85 °C, for 1 min')
    assert written["ttft_p90_high"]["annotations"]["description"].startswith(
        "{{ $labels.server }}: 1 request in 10 waited {{ $value | humanizeDuration }} or more")


def test_rules_promql_cannot_say_become_comments_saying_why() -> None:
    file = parse_rules(
        '[[rule]]\nname = "odd_metric"\nmetric = "gpu-power"\nop = ">"\nthreshold = 1\n'
        '[[rule]]\nname = "odd_label"\nmetric = "gpu_power_watts"\nmatch = { "gpu id" = "0" }\nop = ">"\n'
        'threshold = 1\n'
        '[[rule]]\nname = "off"\nmetric = "gpu_power_watts"\nop = ">"\nthreshold = 1\nenabled = false\n'
        '[[rule]]\nname = "kept"\nmetric = "gpu_power_watts"\nwindow = 0\nop = ">"\nthreshold = 1\n')
    assert file.problems == []
    text = rule_file_text(file.rules)
    assert "# not written: 'gpu-power' is not a Prometheus metric name" in text
    assert "# not written: 'gpu id' is not a Prometheus label name" in text
    assert "# not written: disabled in llmmon" in text
    kept = yaml.safe_load(text)["groups"][0]["rules"]
    assert [(r["alert"], r["expr"]) for r in kept] == [("kept", "gpu_power_watts > 1")]  # no window: latest value
    assert [w.rule.name for w in convert(file.rules) if w.skipped] == ["odd_metric", "odd_label", "off"]


def test_messages_become_go_templates() -> None:
    rule = Rule("r", "m", threshold=(0.0, 1.0))
    assert go_template("{value:.1f} s on {server}", rule) == '{{ printf "%.1f" $value }} s on {{ $labels.server }}'
    assert go_template("{value} vs {threshold} ({metric}, {rule})", rule) == "{{ $value }} vs 0–1 (m, r)"
    assert go_template("literal {{braces}}", rule) == "literal {braces}"
    assert go_template("a lone { brace", rule) == "a lone { brace"  # shown as is, like llmmon does


def test_glob_matchers_keep_llmmons_meaning() -> None:
    rule = Rule("r", "llm_error_ratio", match=(("server", ("ollama@*", "vllm@box")), ("model", ("*",))),
                threshold=0.1)
    assert rule_expr(rule) == ('last_over_time(llm_error_ratio{server=~"ollama@.*|vllm@box", '
                               'model=~".*", model!=""}[1m]) > 0.1')  # "*" wants the label present


def test_metrics_named_like_promql_words_are_selected_by_name() -> None:
    """PromQL reads ``INF``, ``nan``, ``bool``, ``on`` (any case) as a number or keyword: such a
    metric is selected as ``{__name__="..."}``, with the rule's matchers beside it."""
    hot = Rule("r", "INF", ">", 1.0, "avg", 60.0, match=(("server", ("ollama@*",)),))
    assert rule_expr(hot) == 'avg_over_time({__name__="INF", server=~"ollama@.*"}[1m]) > 1'
    gone = Rule("r", "bool", absent_for=60.0)
    sel = '{__name__="bool"}'
    assert rule_expr(gone) == (f"(present_over_time({sel}[1h]) unless present_over_time({sel}[1m]))"
                               f" or (absent_over_time({sel}[1m]))")
    assert rule_expr(Rule("r", "NaN", "<", 2.0)) == 'last_over_time({__name__="NaN"}[1m]) < 2'
    assert rule_expr(Rule("r", "rate_total", "<", 2.0)) == "last_over_time(rate_total[1m]) < 2"  # only whole words


glob_chars = st.sampled_from("ab.*?[]!^-\\|()+$ é")


@settings(max_examples=300, deadline=None)
@given(st.text(glob_chars, min_size=1, max_size=8), st.text(st.sampled_from("ab.!^-\\|()+$[] é"), max_size=6))
def test_glob_regex_matches_exactly_what_fnmatch_matches(pattern: str, value: str) -> None:
    assert (re.fullmatch(glob_regex(pattern), value) is not None) == fnmatchcase(value, pattern)


def run_main(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LLMMON_CONFIG": str(env_home / "config.toml"), "HOME": str(env_home)}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_rules_command_writes_the_users_rules(tmp_path: Path) -> None:
    user = tmp_path / "alert_rules.toml"
    user.write_text(DEFAULT_RULES_PATH.read_text() + '\n[[rule]]\nname = "mine"\nmetric = "gpu_power_watts"\n'
                    'op = ">"\nthreshold = 400\nfor = "90s"\n', encoding="utf-8")
    out = tmp_path / "out.yml"
    done = run_main("rules", "--prometheus", str(out), env_home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{len(shipped()) + 1} rules written from {user}" in done.stderr
    mine = yaml.safe_load(out.read_text())["groups"][0]["rules"][-1]
    assert mine["alert"] == "mine" and mine["for"] == "1m30s"
    assert mine["expr"] == "last_over_time(gpu_power_watts[1m]) > 400"
    to_stdout = run_main("rules", "--prometheus", env_home=tmp_path)
    assert to_stdout.stdout == out.read_text()


def test_rules_command_says_what_is_wrong(tmp_path: Path) -> None:
    asked = run_main("rules", env_home=tmp_path)
    assert asked.returncode == 2 and "--prometheus" in asked.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('[[rule]]\nname = "x"\nmetric = "m"\nthreshold = 1\naggregation = "p100"\n',
                      encoding="utf-8")
    failed = run_main("rules", "--prometheus", "--rules", str(broken), env_home=tmp_path)
    assert failed.returncode == 1 and "unknown aggregation 'p100'" in failed.stderr and failed.stdout == ""
