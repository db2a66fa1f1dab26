"""Editing the alert rule file: a rule as a ``[[rule]]`` table, and in-place changes to the
file's text (replace, add or delete one rule; set one ``[notifications]`` option) that keep
everything else — comments, other rules, even broken ones — exactly as the user wrote it."""
from __future__ import annotations

import json
import re

from app.alerts.rules import Rule, RuleChunk, rule_chunks
from app.durations import format_duration

_TABLE = re.compile(r"^\s*\[")                 # any table header
_RULE_SUBTABLE = re.compile(r"^\s*\[\s*rule\s*\.")  # [rule.match], [rule.baseline]


def _toml_str(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)


def rule_to_toml(rule: Rule) -> str:
    """The ``[[rule]]`` table of a rule, with only the keys that differ from the defaults."""
    lines = ["[[rule]]", f"name = {_toml_str(rule.name)}"]
    if rule.title:
        lines.append(f"title = {_toml_str(rule.title)}")
    if rule.description:
        lines.append(f"description = {_toml_str(rule.description)}")
    lines.append(f"metric = {_toml_str(rule.metric)}")
    if rule.match:
        items = []
        for key, patterns in rule.match:
            value = _toml_str(patterns[0]) if len(patterns) == 1 else "[" + ", ".join(map(_toml_str, patterns)) + "]"
            items.append(f"{key} = {value}")
        lines.append("match = { " + ", ".join(items) + " }")
    lines.append(f"aggregation = {_toml_str(rule.aggregation)}")
    lines.append(f"window = {_toml_str(format_duration(rule.window))}")
    if rule.baseline is not None:
        b = rule.baseline
        lines.append(f'baseline = {{ aggregation = {_toml_str(b.aggregation)}, '
                     f'window = {_toml_str(format_duration(b.window))}, min_samples = {b.min_samples} }}')
    if rule.threshold is not None:
        lines.append(f"op = {_toml_str(rule.op)}")
        if isinstance(rule.threshold, tuple):
            lines.append(f"threshold = [{_toml_number(rule.threshold[0])}, {_toml_number(rule.threshold[1])}]")
        else:
            lines.append(f"threshold = {_toml_number(rule.threshold)}")
    if rule.absent_for is not None:
        lines.append(f"absent_for = {_toml_str(format_duration(rule.absent_for))}")
    lines.append(f"for = {_toml_str(format_duration(rule.for_s))}")
    lines.append(f"cooldown = {_toml_str(format_duration(rule.cooldown))}")
    lines.append(f"severity = {_toml_str(rule.severity)}")
    if rule.message:
        lines.append(f"message = {_toml_str(rule.message)}")
    if rule.hint:
        lines.append(f"hint = {_toml_str(rule.hint)}")
    if not rule.enabled:
        lines.append("enabled = false")
    return "\n".join(lines) + "\n"


def _toml_number(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def _rule_span(chunk: RuleChunk) -> tuple[int, int]:
    """0-based ``[start, end)`` of the lines that belong to the rule itself: trailing blank and
    comment lines (usually the next rule's heading) and any other table stay where they are."""
    end = len(chunk.lines)
    for i, line in enumerate(chunk.lines[1:], start=1):
        if _TABLE.match(line) and not _RULE_SUBTABLE.match(line):
            end = i
            break
    while end > 1 and (not chunk.lines[end - 1].strip() or chunk.lines[end - 1].lstrip().startswith("#")):
        end -= 1
    start = chunk.first - 1
    return start, start + end


def replace_rule(text: str, name: str, rule: Rule | None) -> str:
    """The file text with rule ``name`` replaced by ``rule`` (deleted when ``None``), or ``rule``
    appended when no rule has that name. Everything else (comments, broken rules) is kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    new = rule_to_toml(rule).splitlines(keepends=True) if rule is not None else []
    for chunk in rule_chunks("".join(lines))[1]:
        data, _ = chunk.parse("")
        rules = data.get("rule") if data else None
        if isinstance(rules, list) and rules and isinstance(rules[0], dict) and rules[0].get("name") == name:
            start, end = _rule_span(chunk)
            return "".join(lines[:start] + new + lines[end:])
    if rule is None:
        return "".join(lines)
    return "".join(lines) + ("\n" if lines and lines[-1].strip() else "") + "".join(new)


def set_notify_option(text: str, key: str, value: str) -> str:
    """The file text with ``[notifications] key = value`` (``value`` is TOML, e.g. ``'"slack"'``);
    the line is replaced in place (keeping its comment), added to the table, or the table is
    added at the top."""
    lines = text.splitlines(keepends=True)
    table = next((i for i, line in enumerate(lines) if re.match(r"^\s*\[\s*notifications\s*\]", line)), None)
    if table is None:
        return f"[notifications]\n{key} = {value}\n\n" + text
    end = next((i for i in range(table + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=[^#\n]*(#.*)?")
    for i in range(table + 1, end):
        m = pattern.match(lines[i])
        if m:
            lines[i] = f"{key} = {value}" + (f"  {m.group(1)}" if m.group(1) else "") + "\n"
            return "".join(lines)
    lines.insert(table + 1, f"{key} = {value}\n")
    return "".join(lines)
