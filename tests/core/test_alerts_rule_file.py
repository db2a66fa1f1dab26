"""Editing the rule file: written rules read back identically, and editing one rule keeps the
user's comments and even their broken rules."""
from __future__ import annotations

from dataclasses import replace

from app.alerts.rule_file import replace_rule, rule_to_toml
from app.alerts.rules import DEFAULT_RULES_PATH, Rule, load_rules, parse_rules


def test_written_rules_read_back_identically() -> None:
    for rule in load_rules(DEFAULT_RULES_PATH).rules:
        again = parse_rules(rule_to_toml(rule))
        assert again.problems == [] and again.rules == [rule]
    odd = Rule("q", "m", op="!=", threshold=0.125, match=(("server", ("a\"b", "c*")),), enabled=False,
               message="{server} \\ {value:.1f}", absent_for=90)
    assert parse_rules(rule_to_toml(odd)).rules == [odd]


def test_editing_one_rule_keeps_comments_and_broken_rules() -> None:
    text = DEFAULT_RULES_PATH.read_text() + '\n[[rule]]\nname = "mine"\nmetric = "x"\nthreshold = oops\n'
    before = parse_rules(text)
    gpu = next(r for r in before.rules if r.name == "gpu_hot")
    edited = replace_rule(text, "gpu_hot", replace(gpu, threshold=80.0, enabled=False))
    after = parse_rules(edited)
    assert len(after.problems) == len(before.problems) == 1  # the broken rule is kept as it was
    assert "Invalid value (rule skipped)" in after.problems[0]
    changed = next(r for r in after.rules if r.name == "gpu_hot")
    assert changed.threshold == 80 and not changed.enabled
    assert [r.name for r in after.rules] == [r.name for r in before.rules]
    assert edited.count("#") == text.count("#")  # every comment survived
    added = replace_rule(edited, "new", Rule("new", "system_swap_percent", threshold=50))
    assert parse_rules(added).rules[-1].name == "new"
    removed = parse_rules(replace_rule(added, "gpu_hot", None))
    assert "gpu_hot" not in {r.name for r in removed.rules} and len(removed.rules) == len(before.rules)
