"""Alert rules: what they are, and reading the TOML rule file the user can edit (editing it is
in ``rule_file``).

A rule watches one metric (any series name from ``docs/metrics.md``), selects series with label
matchers, aggregates each series over a window, compares the result with a threshold and fires
when that has held for a while. The file is ``alert_rules.toml`` in the user's config dir, a
copy of ``app/resources/alert_rules.toml`` made on first run (the file's header documents every key).

A broken file never stops the app: each ``[[rule]]`` table is parsed on its own, so a syntax
error or a bad value skips only that rule, with a message naming the file and line::

    alert_rules.toml line 14: rule 'gpu_hot': unknown aggregation 'p100' (use last, avg, ...)

>>> rules = parse_rules('[[rule]]\\nname = "hot"\\nmetric = "gpu_temperature_celsius"\\n'
...                     'op = ">"\\nthreshold = 85\\nfor = "1m"\\n')
>>> rules.rules[0].for_s, rules.problems
(60.0, [])
"""
from __future__ import annotations

import logging
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path
from typing import Any

from app.config import config_path
from app.durations import brief, format_duration, parse_duration
from app.records import Labels
from app.resources import ALERT_RULES, resource_path
from app.toml_lines import Key, key_line

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = resource_path(ALERT_RULES)
SEVERITIES = ("info", "warning", "critical")  # least to most severe
SEVERITY_RANK = {s: rank for rank, s in enumerate(SEVERITIES, 1)}  # for "the worst of these"
OPS = (">", ">=", "<", "<=", "==", "!=", "between")
AGGREGATIONS = ("last", "avg", "min", "max", "rate", "median")  # plus pNN, e.g. p95, p99.9
WEBHOOK_FORMATS = ("off", "json", "slack")
RULE_KEYS = ("name", "title", "description", "metric", "match", "aggregation", "window", "op",
             "threshold", "for", "cooldown", "severity", "absent_for", "baseline", "message",
             "hint", "enabled")
BASELINE_KEYS = ("aggregation", "window", "min_samples")
NOTIFY_KEYS = ("desktop", "tray", "webhook", "group_seconds")

_HEADER = re.compile(r"""^\s*\[\[\s*(rule|"rule"|'rule')\s*\]\]\s*(#.*)?$""")
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")
MAX_NUMBER = 1e300               # thresholds: finite, and far from overflowing when compared
MAX_MIN_SAMPLES = 1_000_000
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True)
class Baseline:
    """Compare a series with its own history: the rule's value becomes ``value / baseline``."""

    aggregation: str = "median"
    window: float = 3600.0
    min_samples: int = 10


@dataclass(frozen=True)
class Rule:
    """One alert rule. Durations are seconds; ``threshold`` is ``(low, high)`` for ``between``."""

    name: str
    metric: str
    op: str = ">"
    threshold: float | tuple[float, float] | None = None
    aggregation: str = "last"
    window: float = 60.0
    for_s: float = 0.0
    cooldown: float = 600.0
    severity: str = "warning"
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    absent_for: float | None = None
    baseline: Baseline | None = None
    title: str = ""
    message: str = ""
    description: str = ""
    hint: str = ""                # what to do about it, shown under the message
    enabled: bool = True
    line: int = field(default=0, compare=False)  # where the rule starts in its file

    @property
    def label(self) -> str:
        return self.title or self.name

    def matches(self, labels: Labels) -> bool:
        """Whether a series' labels satisfy every matcher (glob patterns, any of a list)."""
        have = dict(labels)
        return all(key in have and any(fnmatchcase(have[key], p) for p in patterns)
                   for key, patterns in self.match)

    def exact_labels(self) -> Labels:
        """The labels the matchers pin to one literal value (names an absent series)."""
        return tuple((k, p[0]) for k, p in self.match
                     if len(p) == 1 and not any(c in p[0] for c in "*?["))

    def condition_text(self) -> str:
        """A short human description, e.g. ``avg 1m > 80 for 5m``."""
        what = self.aggregation if self.aggregation == "last" else f"{self.aggregation} {format_duration(self.window)}"
        if self.baseline is not None:
            what += f" ÷ {self.baseline.aggregation} {format_duration(self.baseline.window)}"
        parts = []
        if self.threshold is not None:
            if isinstance(self.threshold, tuple):
                parts.append(f"{what} between {_num(self.threshold[0])} and {_num(self.threshold[1])}")
            else:
                parts.append(f"{what} {self.op} {_num(self.threshold)}")
        if self.absent_for is not None:
            parts.append(f"no data for {format_duration(self.absent_for)}")
        text = " or ".join(parts)
        if self.for_s:
            text += f" for {format_duration(self.for_s)}"
        return text

    def match_text(self) -> str:
        return ", ".join(f"{k}={'|'.join(p)}" for k, p in self.match)


@dataclass(frozen=True)
class NotifySettings:
    """The ``[notifications]`` table. The webhook URL itself lives in the OS keyring only."""

    desktop: bool = True
    tray: bool = True
    webhook: str = "off"          # "off", "json" (generic JSON) or "slack" (Slack-compatible)
    group_seconds: float = 10.0   # at most one notification per sink per this many seconds


@dataclass
class RuleFile:
    """The result of reading a rule file: the valid rules, the settings, and what was wrong."""

    rules: list[Rule] = field(default_factory=list)
    notifications: NotifySettings = field(default_factory=NotifySettings)
    problems: list[str] = field(default_factory=list)
    path: Path | None = None


def _num(x: float) -> str:
    return f"{x:g}"


# ---------------------------------------------------------------------------- validation
class RuleError(ValueError):
    """A problem with one key of one rule; ``key`` lets the reader find its line."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


def percentile_of(aggregation: str) -> float | None:
    """``95.0`` for ``"p95"``, ``50.0`` for ``"median"``, ``None`` for other aggregations."""
    if aggregation == "median":
        return 50.0
    m = _PERCENTILE.match(aggregation)
    return float(m.group(1)) if m else None


def _aggregation(value: object, key: str) -> str:
    text = str(value).strip().lower()
    if text in AGGREGATIONS or ((p := percentile_of(text)) is not None and 0 < p < 100):
        return text
    raise RuleError(f"unknown aggregation {value!r} (use {', '.join(AGGREGATIONS)} or pNN such as p95)", key)


def _duration(raw: dict[str, Any], key: str, default: float) -> float:
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ValueError as exc:
        raise RuleError(f"{key}: {exc}", key) from None


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise RuleError(f"{key} must be a number, not {brief(value)}", key)
    return float(value)


def _text(raw: dict[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise RuleError(f"{key} must be a text in quotes", key)
    return value


def _match(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise RuleError('match must be a table, e.g. match = { server = "ollama@*" }', "match")
    out = []
    for label, patterns in sorted(value.items()):
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise RuleError(f"match.{label} must be a text or a list of texts", f"match.{label}")
        out.append((label, tuple(patterns)))
    return tuple(out)


def _baseline(value: object) -> Baseline:
    if not isinstance(value, dict):
        raise RuleError('baseline must be a table, e.g. baseline = { aggregation = "median", window = "1h" }',
                        "baseline")
    unknown = sorted(set(value) - set(BASELINE_KEYS))
    if unknown:
        raise RuleError(f"unknown baseline key(s) {', '.join(unknown)} (use {', '.join(BASELINE_KEYS)})",
                        "baseline")
    min_samples = value.get("min_samples", 10)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or not 1 <= min_samples <= MAX_MIN_SAMPLES:
        raise RuleError(f"baseline.min_samples must be a whole number from 1 to {MAX_MIN_SAMPLES:,}", "baseline")
    window = _duration(value, "window", 3600.0)
    if not window:
        raise RuleError("baseline.window must be longer than zero", "baseline")
    return Baseline(_aggregation(value.get("aggregation", "median"), "baseline"), window, min_samples)


def rule_from_dict(raw: dict[str, Any], line: int = 0) -> Rule:
    """A validated :class:`Rule` from one ``[[rule]]`` table; raises :class:`RuleError`."""
    unknown = [k for k in raw if k not in RULE_KEYS]
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r} (rules take: {', '.join(RULE_KEYS)})", unknown[0])
    name = _text(raw, "name").strip()
    if not name:
        raise RuleError("every rule needs a name", "name")
    metric = _text(raw, "metric").strip()
    if not metric:
        raise RuleError("metric is missing: name the series to watch, e.g. gpu_temperature_celsius", "metric")
    op = _text(raw, "op", ">").strip()
    if op not in OPS:
        raise RuleError(f"unknown op {op!r} (use {' '.join(OPS)})", "op")
    threshold: float | tuple[float, float] | None = None
    if "threshold" in raw:
        value = raw["threshold"]
        if op == "between":
            if not (isinstance(value, list) and len(value) == 2):
                raise RuleError("with op = \"between\", threshold is [low, high]", "threshold")
            low, high = (_number(v, "threshold") for v in value)
            if low >= high:
                raise RuleError("threshold [low, high] needs low < high", "threshold")
            threshold = (low, high)
        else:
            threshold = _number(value, "threshold")
    absent_for = _duration(raw, "absent_for", 0.0) if "absent_for" in raw else None
    if threshold is None and absent_for is None:
        raise RuleError("threshold is missing (or give absent_for to alert on missing data)", "threshold")
    severity = _text(raw, "severity", "warning").strip().lower()
    if severity not in SEVERITIES:
        raise RuleError(f"unknown severity {severity!r} (use {', '.join(SEVERITIES)})", "severity")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled must be true or false", "enabled")
    message = _text(raw, "message")
    try:
        message.format_map(_Blank())
    except Exception as exc:  # a bad field ({x.y}, {0[}, {!z}): the template is unusable, whatever the error
        raise RuleError(f"message template: {exc}", "message") from None
    window = _duration(raw, "window", 60.0)
    aggregation = _aggregation(raw.get("aggregation", "last"), "aggregation")
    if aggregation != "last" and not window:
        raise RuleError(f"aggregation {aggregation} needs a window longer than zero", "window")
    return Rule(
        name=name, metric=metric, op=op, threshold=threshold, aggregation=aggregation,
        window=window, for_s=_duration(raw, "for", 0.0), cooldown=_duration(raw, "cooldown", 600.0),
        severity=severity, match=_match(raw.get("match", {})), absent_for=absent_for,
        baseline=_baseline(raw["baseline"]) if "baseline" in raw else None,
        title=_text(raw, "title"), message=message, description=_text(raw, "description"),
        hint=_text(raw, "hint").strip(), enabled=enabled, line=line)


class _Blank(dict[str, object]):
    """Formats any ``{field}`` (with any format spec) as empty: checks a template's syntax."""

    class _Anything:
        def __format__(self, spec: str) -> str:
            return ""

    def __missing__(self, key: str) -> object:
        return self._Anything()


def _notify_settings(raw: object) -> tuple[NotifySettings, list[tuple[str, str]]]:
    """Settings and ``(key, problem)`` pairs; a bad key keeps its default."""
    if not isinstance(raw, dict):
        return NotifySettings(), [("notifications", "[notifications] must be a table")]
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in NOTIFY_KEYS:
            problems.append((key, f"unknown notifications key {key!r} (use {', '.join(NOTIFY_KEYS)})"))
        elif key in ("desktop", "tray"):
            if isinstance(value, bool):
                values[key] = value
            else:
                problems.append((key, f"notifications.{key} must be true or false"))
        elif key == "webhook":
            if value in WEBHOOK_FORMATS:
                values[key] = value
            else:
                problems.append((key, f"notifications.webhook must be one of {', '.join(WEBHOOK_FORMATS)}"))
        else:
            try:
                values["group_seconds"] = parse_duration(value)
            except ValueError as exc:
                problems.append((key, f"notifications.group_seconds: {exc}"))
    return NotifySettings(**values), problems


# ---------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class RuleChunk:
    """A stretch of the file that parses on its own: the preamble, or one ``[[rule]]`` table
    with whatever follows it up to the next one."""

    first: int          # 1-based line number of the chunk's first line
    lines: list[str]

    def key_line(self, key: Key) -> int:
        """The file line of ``key`` (a path as tomllib nests it, e.g. ``("rule", 0, "match",
        "server")``), or of the nearest part of it that is written; else the chunk's first."""
        return self.first - 1 + (key_line("".join(self.lines), key) or 1)

    def rule_key_line(self, key: str) -> int:
        """The line of a rule's key as :class:`RuleError` names it (``"match.server"``)."""
        return self.key_line(("rule", 0, *key.split(".", 1)) if key else ("rule", 0))

    def parse(self, source: str) -> tuple[dict[str, Any], str] | tuple[None, str]:
        """The chunk's TOML, or ``None`` and a line-numbered message."""
        try:
            return tomllib.loads("".join(self.lines)), ""
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            message = str(exc) if isinstance(exc, tomllib.TOMLDecodeError) else "nested too deeply"
            m = _TOML_LINE.search(message)
            line = self.first + int(m.group(1)) - 1 if m else self.first
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
            return None, f"{source} line {line}: {message}"


def rule_chunks(text: str) -> tuple[RuleChunk, list[RuleChunk]]:
    """The preamble and one chunk per ``[[rule]]`` table, so each parses (and fails) alone.

    tomllib reports neither the line of a table nor more than one error per document;
    splitting at the ``[[rule]]`` headers gives both.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    preamble = RuleChunk(1, lines[:starts[0]] if starts else lines)
    return preamble, [RuleChunk(a + 1, lines[a:b]) for a, b in pairwise([*starts, len(lines)])]


def parse_rules(text: str, source: str = "alert_rules.toml") -> RuleFile:
    """Parse the text of a rule file; never raises. Bad rules are skipped and reported."""
    result = RuleFile()
    preamble, chunks = rule_chunks(text)
    top: dict[str, tuple[object, RuleChunk]] = {}
    names: dict[str, int] = {}

    def take_top_level(data: dict[str, Any], chunk: RuleChunk) -> None:
        for key, value in data.items():
            if key == "rule":
                if chunk is preamble and value != []:
                    result.problems.append(f"{source} line {chunk.key_line((key,))}: write each rule as a "
                                           "[[rule]] table (in double brackets); ignored")
            elif key in top:
                result.problems.append(f"{source} line {chunk.key_line((key,))}: [{key}] is defined twice")
            else:
                top[key] = (value, chunk)

    def take_rule(raw: object, chunk: RuleChunk) -> None:
        if not isinstance(raw, dict):
            result.problems.append(f"{source} line {chunk.first}: a rule must be a [[rule]] table (rule skipped)")
            return
        label = f"rule {raw.get('name')!r}: " if isinstance(raw.get("name"), str) else ""
        try:
            rule = rule_from_dict(raw, chunk.first)
        except RuleError as exc:
            result.problems.append(f"{source} line {chunk.rule_key_line(exc.key)}: {label}{exc} (rule skipped)")
            return
        if rule.name in names:
            result.problems.append(f"{source} line {chunk.rule_key_line('name')}: rule name {rule.name!r} is "
                                   f"already used on line {names[rule.name]} (rule skipped)")
            return
        names[rule.name] = chunk.first
        result.rules.append(rule)

    data, error = preamble.parse(source)
    if data is None:
        result.problems.append(f"{error} (the settings before the first [[rule]] are ignored)")
    elif data:
        take_top_level(data, preamble)
    for chunk in chunks:
        data, error = chunk.parse(source)
        if data is None:
            result.problems.append(f"{error} (rule skipped)")
            continue
        take_top_level(data, chunk)
        raws = data.get("rule")
        for raw in raws if isinstance(raws, list) else [raws]:
            take_rule(raw, chunk)
    for key, (value, chunk) in top.items():
        if key == "notifications":
            result.notifications, problems = _notify_settings(value)
            result.problems.extend(f"{source} line {chunk.key_line((key, k))}: {p}" for k, p in problems)
        else:
            result.problems.append(f"{source} line {chunk.key_line((key,))}: unknown setting {key!r} "
                                   "(the file holds [notifications] and [[rule]] tables)")
    return result


def load_rules(path: Path) -> RuleFile:
    """Read and parse a rule file; an unreadable file gives no rules and one problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return RuleFile(problems=[f"{path}: cannot read the rule file: {exc}"], path=path)
    result = parse_rules(text, path.name)
    result.path = path
    for problem in result.problems:
        log.warning("alert rules: %s", problem)
    return result


def user_rules_path() -> Path:
    """The user's rule file, next to ``config.toml``."""
    return config_path().parent / "alert_rules.toml"


def ensure_user_rules(path: Path | None = None) -> Path:
    """The user's rule file, first copied from the shipped defaults when it does not exist."""
    path = path or user_rules_path()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEFAULT_RULES_PATH, path)
            log.info("alert rules: wrote the default rules to %s", path)
        except OSError as exc:
            log.warning("alert rules: cannot create %s (%s); using the defaults", path, exc)
            return DEFAULT_RULES_PATH
    return path
