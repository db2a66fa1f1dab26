"""llmmon's alert rules as a Prometheus rule file, so a fleet gets the same alerts from
Prometheus and Alertmanager as each llmmon gets from its own engine (``main.py rules
--prometheus``).

Each enabled :class:`~app.alerts.rules.Rule` becomes one alerting rule over the exported series
(same names, see ``app/exporter.py``):

* the aggregation over the window becomes ``last_over_time``, ``avg_over_time``,
  ``min_over_time``, ``max_over_time``, ``rate`` or ``quantile_over_time`` (``median``, ``pNN``);
* glob label matchers become anchored regular expressions (``server = "ollama@*"`` →
  ``server=~"ollama@.*"``), a list of patterns an alternation;
* a baseline divides by the same series' aggregate over the baseline window, where it has at
  least ``min_samples`` points;
* ``absent_for`` also fires for a series seen in the last hour but not for ``absent_for``
  (and, like llmmon, for a never-seen series when the rule names its labels exactly);
* ``for``, severity, title, message (``{value:.0%}`` → ``{{ $value | humanizePercentage }}``,
  ``{server}`` → ``{{ $labels.server }}``, ``{value_text}`` → Prometheus' humanize function for
  the metric's unit, ``{held}`` → the rule's ``for``) and hint carry over. ``cooldown`` has no Prometheus
  equivalent (Alertmanager's ``repeat_interval`` plays that part): it is noted in a comment.

A rule that cannot be written in PromQL (or is disabled) is written as a comment saying why.
The text is YAML with every scalar JSON-quoted (JSON strings are YAML double-quoted scalars).

>>> from app.alerts.rules import Rule
>>> rule_expr(Rule("hot", "gpu_temperature_celsius", ">", 85.0, "avg", 60.0))
'avg_over_time(gpu_temperature_celsius[1m]) > 85'
"""
from __future__ import annotations

import fnmatch
import json
import re
import string
from dataclasses import dataclass

from app.alerts.rules import Rule, percentile_of
from app.alerts.sentence import limit_text, threshold_text
from app.durations import format_duration, spoken_duration
from app.units import metric_unit

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
PROMQL_WORDS = frozenset({
    "inf", "nan",  # numbers
    "and", "or", "unless", "atan2",  # binary operators
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",  # aggregations
    "count_values", "quantile", "limitk", "limit_ratio",
    "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",  # modifiers
    "start", "end", "step", "smoothed", "anchored",  # preprocessors and range modifiers
})
"""Words PromQL's lexer reads (whatever their case) as a number or a keyword rather than a metric
name: its ``key`` table, Prometheus 2 and 3, and ``Inf``/``NaN``. Prometheus 2.42 already takes
some of them as a metric where a metric is expected; ``inf``, ``nan``, ``on``, ``ignoring``,
``group_left``, ``group_right``, ``bool`` and ``atan2`` it does not (``INF > 1`` compares two
numbers), and the others may follow in another version: a metric with any of these names is
selected as ``{__name__="..."}``, which every version reads as a metric."""
ABSENT_LOOKBACK_S = 3600.0
"""How far back a series must have been seen for its silence to fire an ``absent_for`` rule."""
_OVER_TIME = {"last": "last_over_time", "avg": "avg_over_time", "min": "min_over_time", "max": "max_over_time"}
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
"""What YAML may not hold raw (control characters) or may read as a line break (NEL, U+2028)."""


class NotExpressible(ValueError):
    """A rule PromQL cannot say; the message says why."""


@dataclass(frozen=True)
class WrittenRule:
    """One rule of the output: its PromQL, or why it has none."""

    rule: Rule
    expr: str = ""
    skipped: str = ""


def glob_regex(pattern: str) -> str:
    """An RE2 regular expression (anchored by PromQL) matching what ``fnmatchcase`` matches
    (a label value with a line break aside). Character classes are translated by
    :func:`fnmatch.translate` itself; the rest is one token at a time.

    >>> glob_regex("ollama@*"), glob_regex("gpu[!0]")
    ('ollama@.*', 'gpu[^0]')
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i  # where the class ends, found the way fnmatch finds it
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
            else:
                out.append(_glob_class(pattern[i - 1:j + 1]))
                i = j + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _glob_class(text: str) -> str:
    """``fnmatch``'s regex for one ``[...]`` class, without its ``(?s:...)\\Z`` wrapper; a
    class that matches nothing becomes ``[^\\s\\S]`` (RE2 has no ``(?!)``)."""
    regex = fnmatch.translate(text).removeprefix("(?s:").removesuffix(")\\Z")
    return regex.replace("(?!)", "[^\\s\\S]")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def selector(rule: Rule) -> str:
    """``metric{label matchers}`` selecting the series the rule selects; a metric named like a
    PromQL number or keyword (:data:`PROMQL_WORDS`) goes inside the braces.

    >>> selector(Rule("r", "INF", match=(("server", ("a",)),)))
    '{__name__="INF", server="a"}'
    """
    if not METRIC_NAME.fullmatch(rule.metric):
        raise NotExpressible(f"{rule.metric!r} is not a Prometheus metric name")
    by_name = rule.metric.lower() in PROMQL_WORDS
    matchers = [f"__name__={json.dumps(rule.metric)}"] if by_name else []
    for label, patterns in rule.match:
        if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise NotExpressible(f"{label!r} is not a Prometheus label name")
        if len(patterns) == 1 and not _is_glob(patterns[0]):
            matchers.append(f"{label}={json.dumps(patterns[0])}")
            continue
        regex = "|".join(glob_regex(p) for p in patterns)
        try:
            matches_empty = re.fullmatch(regex, "") is not None
        except re.error as exc:
            raise NotExpressible(f"match.{label}: {exc}") from None
        matchers.append(f"{label}=~{json.dumps(regex)}")
        if matches_empty:  # llmmon wants the label present; Prometheus treats absent as ""
            matchers.append(f'{label}!=""')
    return ("" if by_name else rule.metric) + ("{" + ", ".join(matchers) + "}" if matchers else "")


def _aggregate(aggregation: str, sel: str, window: float) -> str:
    if window <= 0:  # only "last" may have none (the rule parser says so): the latest value
        if aggregation != "last":
            raise NotExpressible(f"aggregation {aggregation} needs a window longer than zero")
        return sel
    rng = f"{sel}[{format_duration(window)}]"
    if aggregation in _OVER_TIME:
        return f"{_OVER_TIME[aggregation]}({rng})"
    if aggregation == "rate":
        return f"rate({rng})"
    q = percentile_of(aggregation)
    if q is None:
        raise NotExpressible(f"aggregation {aggregation!r} has no PromQL equivalent")
    return f"quantile_over_time({q / 100:g}, {rng})"


def _number(x: float) -> str:
    return f"{x:g}"


def rule_expr(rule: Rule) -> str:
    """The PromQL expression that is non-empty exactly where the rule's condition holds."""
    sel = selector(rule)
    parts = []
    if rule.threshold is not None:
        value = _aggregate(rule.aggregation, sel, rule.window)
        if rule.baseline is not None:
            b = rule.baseline
            base = _aggregate(b.aggregation, sel, b.window)
            enough = f"count_over_time({sel}[{format_duration(b.window)}]) >= {b.min_samples}"
            value = f"({value} / ({base} != 0) and ({enough}))"
        if isinstance(rule.threshold, tuple):
            low, high = rule.threshold
            parts.append(f"{value} > {_number(low)} < {_number(high)}")
        else:
            parts.append(f"{value} {rule.op} {_number(rule.threshold)}")
    if rule.absent_for is not None:
        gone = format_duration(rule.absent_for)
        lookback = format_duration(max(ABSENT_LOOKBACK_S, rule.absent_for * 2))
        parts.append(f"present_over_time({sel}[{lookback}]) unless present_over_time({sel}[{gone}])")
        if rule.exact_labels() or not rule.match:
            parts.append(f"absent_over_time({sel}[{gone}])")
    if not parts:
        raise NotExpressible("the rule has neither a threshold nor absent_for")
    return parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)


def go_template(message: str, rule: Rule) -> str:
    """A rule's Python-format message as a Prometheus (Go) template.

    >>> from app.alerts.rules import Rule
    >>> go_template("{value:.0%} of {server} over {threshold}", Rule("r", "m", threshold=0.1))
    '{{ $value | humanizePercentage }} of {{ $labels.server }} over 0.1'
    """
    out = []
    try:
        parsed = list(string.Formatter().parse(message))
    except ValueError:  # not a valid template (a lone brace): llmmon shows it as it is, too
        parsed = [(message, None, None, None)]
    for literal, field_name, spec, _conversion in parsed:
        out.append(literal.replace("{{", '{{ "{{" }}'))
        if field_name is None:
            continue
        name = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        if name == "value":
            digits = re.fullmatch(r"\.(\d+)f", spec or "")
            if (spec or "").endswith("%"):
                out.append("{{ $value | humanizePercentage }}")
            elif digits:
                out.append(f'{{{{ printf "%.{digits.group(1)}f" $value }}}}')
            else:
                out.append("{{ $value }}")
        elif name == "threshold":
            t = rule.threshold
            if isinstance(t, tuple):
                out.append(f"{_number(t[0])}–{_number(t[1])}")
            elif t is not None:
                out.append(_number(t))
        elif name == "value_text":
            out.append(_go_value_text(rule))
        elif name == "threshold_text":
            out.append(_threshold_words(rule))
        elif name == "held":  # Prometheus fires after "for": that is how long it has held
            out.append(spoken_duration(rule.for_s))
        elif name in ("metric", "rule"):
            out.append(rule.metric if name == "metric" else rule.name)
        else:
            out.append(f"{{{{ $labels.{name} }}}}" if LABEL_NAME.fullmatch(name) else "")
    return "".join(out)


def _go_value_text(rule: Rule) -> str:
    """``{value_text}`` in Go: Prometheus' humanize functions for the metric's unit."""
    unit = "ratio" if rule.baseline is not None else metric_unit(rule.metric)
    if unit == "ratio":
        return "{{ $value | humanizePercentage }}"
    if unit == "s":
        return "{{ $value | humanizeDuration }}"
    if unit in ("B", "B/s"):
        return "{{ $value | humanize1024 }}" + unit
    return "{{ $value | humanize }}" + (f" {unit}" if unit else "")


def _threshold_words(rule: Rule) -> str:
    t = rule.threshold
    return threshold_text(rule, float(t)) if isinstance(t, (int, float)) else limit_text(rule)


def convert(rules: list[Rule]) -> list[WrittenRule]:
    """Each rule with its expression, or the reason it is written as a comment."""
    out = []
    for rule in rules:
        if not rule.enabled:
            out.append(WrittenRule(rule, skipped="disabled in llmmon"))
            continue
        try:
            out.append(WrittenRule(rule, expr=rule_expr(rule)))
        except NotExpressible as exc:
            out.append(WrittenRule(rule, skipped=str(exc)))
    return out


def _escape_unprintable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _q(text: str) -> str:
    """A YAML double-quoted scalar: JSON's quoting, plus escapes for what YAML may not hold raw."""
    return _escape_unprintable(json.dumps(text, ensure_ascii=False))


def _comment(text: str) -> str:
    return _escape_unprintable(" ".join(text.split()))  # one line: a newline would end the comment


def rule_file_text(rules: list[Rule], source: str = "", group: str = "llmmon") -> str:
    """The Prometheus rule file (YAML) for ``rules``."""
    origin = f" from {_comment(source)}" if source else ""
    lines = [
        f"# Prometheus alerting rules written by llmmon (main.py rules --prometheus){origin}.",
        "# The expressions read the series llmmon's exporter serves (docs/metrics.md); every alert keeps",
        "# the series' labels plus instance and job. Check with: promtool check rules FILE",
        "groups:",
        f"  - name: {_q(group)}",
        "    rules:",
    ]
    written = convert(rules)
    if not any(w.expr for w in written):
        lines[-1] += " []"
    for w in written:
        r = w.rule
        lines.append(f"      # {_comment(r.name)}: {_comment(r.label)} — {_comment(r.condition_text())}")
        if w.skipped:
            lines.append(f"      # not written: {_comment(w.skipped)}")
            continue
        if r.cooldown:
            lines.append(f"      # cooldown {format_duration(r.cooldown)} in llmmon: Prometheus has none "
                         "(Alertmanager's repeat_interval plays that part)")
        lines += [f"      - alert: {_q(r.name)}", f"        expr: {_q(w.expr)}"]
        if r.for_s:
            lines.append(f"        for: {_q(format_duration(r.for_s))}")
        lines += ["        labels:", f"          severity: {_q(r.severity)}", "        annotations:",
                  f"          summary: {_q(r.label)}"]
        description = go_template(r.message, r) if r.message else f"{r.metric}: {r.condition_text()}"
        lines.append(f"          description: {_q(description)}")
        if r.description:
            lines.append(f"          llmmon_description: {_q(r.description)}")
        if r.hint:
            lines.append(f"          hint: {_q(r.hint)}")
    return "\n".join(lines) + "\n"
