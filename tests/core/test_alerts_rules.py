"""The rule file: the shipped defaults, line-numbered errors that skip one rule, durations."""
from __future__ import annotations

import re
from pathlib import Path

from app.alerts.rules import (
    DEFAULT_RULES_PATH,
    Baseline,
    ensure_user_rules,
    load_rules,
    parse_rules,
    user_rules_path,
)
from app.durations import format_duration, parse_duration

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

GOOD = '''\
[[rule]]
name = "hot"
metric = "gpu_temperature_celsius"
threshold = 85
'''


def test_defaults_load_without_problems_and_use_canonical_metric_names() -> None:
    result = load_rules(DEFAULT_RULES_PATH)
    assert result.problems == []
    names = {r.name for r in result.rules}
    assert {"server_down", "tokens_per_second_drop", "ttft_p90_high", "error_rate_high", "gpu_hot",
            "vram_full", "model_offloaded", "vllm_queue_long", "kv_cache_full", "cpu_busy",
            "memory_full", "disk_full"} <= names
    documented = set(re.findall(r"`([a-z0-9_]+)(?:\{[^}]*\})?`", METRICS_DOC.read_text()))
    assert {r.metric for r in result.rules} <= documented
    by_name = {r.name: r for r in result.rules}
    down = by_name["server_down"]
    assert (down.severity, down.for_s, down.threshold, down.op) == ("critical", 30.0, 1.0, "<")
    drop = by_name["tokens_per_second_drop"]
    assert drop.baseline == Baseline("median", 3600.0, 10) and drop.threshold == 0.5
    assert by_name["gpu_hot"].for_s == 60 and by_name["vram_full"].for_s == 120
    assert by_name["model_offloaded"].threshold == (0.0, 1.0)
    assert result.notifications.webhook == "off"


def test_a_syntax_error_skips_only_that_rule_and_names_its_line() -> None:
    text = GOOD + '''
[[rule]]
name = "broken"
metric = "system_cpu_percent"
threshold = 80 %
''' + GOOD.replace('"hot"', '"hot2"')
    result = parse_rules(text)
    assert [r.name for r in result.rules] == ["hot", "hot2"]
    assert len(result.problems) == 1
    assert result.problems[0].startswith("alert_rules.toml line 9:")
    assert "rule skipped" in result.problems[0]


def test_bad_values_are_reported_on_the_line_of_the_key() -> None:
    text = '''# comment
[notifications]
webhook = "email"

[[rule]]
name = "a"
metric = "gpu_temperature_celsius"
aggregation = "p100"
threshold = 85

[[rule]]
name = "b"
metric = "system_cpu_percent"
threshhold = 80

[[rule]]
name = "c"
metric = "system_cpu_percent"
threshold = 80
for = "five minutes"

[[rule]]
name = "d"
metric = "system_cpu_percent"
severity = "panic"
threshold = 80

[[rule]]
name = "a"
metric = "system_cpu_percent"
threshold = 1

[[rule]]
name = "e"
metric = "x"
threshold = 1
[rule.match]
server = 5
'''
    result = parse_rules(text, "rules.toml")
    assert [(r.name, r.line) for r in result.rules] == [("a", 28)]  # the first "a" was skipped
    problems = "\n".join(result.problems)
    assert "rules.toml line 3: notifications.webhook must be one of off, json, slack" in problems
    assert "rules.toml line 8: rule 'a': unknown aggregation 'p100'" in problems
    assert "rules.toml line 14: rule 'b': unknown key 'threshhold'" in problems
    assert "rules.toml line 20: rule 'c': for: 'five minutes' is not a duration" in problems
    assert "rules.toml line 25: rule 'd': unknown severity 'panic'" in problems
    assert "rules.toml line 38: rule 'e': match.server must be a text" in problems
    assert result.notifications.webhook == "off"  # the bad value keeps the safe default


def test_duplicate_names_and_unreadable_files() -> None:
    result = parse_rules(GOOD + "\n" + GOOD)
    assert [r.name for r in result.rules] == ["hot"]
    assert result.problems == ["alert_rules.toml line 7: rule name 'hot' is already used on line 1 (rule skipped)"]
    missing = load_rules(Path("/nonexistent/alert_rules.toml"))
    assert missing.rules == [] and "cannot read the rule file" in missing.problems[0]
    binary = parse_rules("\x00\xff[[rule]]")
    assert binary.rules == [] and binary.problems


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration(15) == 15 and parse_duration("250ms") == 0.25
    assert [format_duration(s) for s in (0, 30, 300, 5400, 86400)] == ["0s", "30s", "5m", "1h30m", "1d"]


def test_first_run_copies_the_defaults_into_the_config_dir() -> None:
    path = ensure_user_rules()
    assert path == user_rules_path() and path.read_text() == DEFAULT_RULES_PATH.read_text()
    path.write_text(GOOD)
    assert ensure_user_rules() == path and path.read_text() == GOOD  # never overwritten
