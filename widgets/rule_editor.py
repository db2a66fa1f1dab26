"""The rule editor dialog: create or edit one alert rule, and test it against the last hour.

The dialog only collects text; :func:`app.alerts.rules.rule_from_dict` validates it, so the
editor and the rule file accept exactly the same rules and give the same error messages.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.alerts.engine import SeriesSource, replay
from app.alerts.rules import AGGREGATIONS, OPS, SEVERITIES, Rule, RuleError, rule_from_dict
from app.durations import format_duration
from widgets.theme import BAD, emphasis

PERCENTILES = ("p50", "p90", "p95", "p99")
TEST_SPAN_S = 3600.0


def parse_match(text: str) -> dict[str, str | list[str]]:
    """``"kind=ollama|vllm, server=ollama@*"`` → the rule file's ``match`` table."""
    out: dict[str, str | list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, sep, value = part.partition("=")
        if not sep or not label.strip() or not value.strip():
            raise RuleError(f"match: write label=value (several values with |), not {part!r}", "match")
        values = [v.strip() for v in value.split("|") if v.strip()]
        out[label.strip()] = values[0] if len(values) == 1 else values
    return out


def _threshold(text: str, op: str) -> float | list[float] | None:
    text = text.strip()
    if not text:
        return None
    try:
        if op == "between":
            return [float(x) for x in text.replace(";", ",").split(",")]
        return float(text)
    except ValueError:
        raise RuleError(f"threshold: {text!r} is not a number"
                        + (" (for between write low, high)" if op == "between" else ""), "threshold") from None


class RuleEditor(QDialog):
    """Edits one rule; :meth:`rule` is the result after ``exec()`` returned Accepted.

    Args:
        source: the live series (metric names to offer, data to test against).
        rule: the rule to edit, or ``None`` for a new one.
        taken: names of the other rules (a new name must be unique).
        clock: "now" for the test against the last hour.
    """

    def __init__(self, source: SeriesSource, rule: Rule | None = None, taken: set[str] | None = None,
                 clock: Callable[[], float] = time.time, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit alert rule" if rule else "New alert rule")
        self.source = source
        self.taken = set(taken or ())
        self.clock = clock
        self.result_rule: Rule | None = None
        r = rule or Rule("", "", threshold=None)

        self.name_edit = QLineEdit(r.name)
        self.title_edit = QLineEdit(r.title)
        self.description_edit = QLineEdit(r.description)
        self.metric_box = QComboBox()
        self.metric_box.setEditable(True)
        self.metric_box.addItems(sorted({k[0] for k in source.keys()}))
        self.metric_box.setCurrentText(r.metric)
        self.match_edit = QLineEdit(r.match_text())
        self.match_edit.setPlaceholderText("e.g. server=ollama@*, model=llama3|qwen2  (empty: every series)")
        self.aggregation_box = QComboBox()
        self.aggregation_box.setEditable(True)
        self.aggregation_box.addItems([*AGGREGATIONS, *PERCENTILES])
        self.aggregation_box.setCurrentText(r.aggregation)
        self.window_edit = QLineEdit(format_duration(r.window))
        self.op_box = QComboBox()
        self.op_box.addItems(OPS)
        self.op_box.setCurrentText(r.op)
        self.threshold_edit = QLineEdit("" if r.threshold is None else
                                   ", ".join(f"{x:g}" for x in r.threshold) if isinstance(r.threshold, tuple)
                                   else f"{r.threshold:g}")
        self.threshold_edit.setPlaceholderText("a number in the metric's unit; for between: low, high")
        self.for_edit = QLineEdit(format_duration(r.for_s))
        self.absent_edit = QLineEdit("" if r.absent_for is None else format_duration(r.absent_for))
        self.absent_edit.setPlaceholderText("empty: missing data is not an alert")
        self.cooldown_edit = QLineEdit(format_duration(r.cooldown))
        self.severity_box = QComboBox()
        self.severity_box.addItems(SEVERITIES)
        self.severity_box.setCurrentText(r.severity)
        self.baseline_box = QCheckBox("Compare with its own history (value ÷ baseline)")
        self.baseline_box.setChecked(r.baseline is not None)
        self.baseline_aggregation_box = QComboBox()
        self.baseline_aggregation_box.setEditable(True)
        self.baseline_aggregation_box.addItems(["median", "avg", "p90", "max"])
        self.baseline_aggregation_box.setCurrentText(r.baseline.aggregation if r.baseline else "median")
        self.baseline_window_edit = QLineEdit(format_duration(r.baseline.window) if r.baseline else "1h")
        baseline_row = QHBoxLayout()
        for w in (self.baseline_box, QLabel("of"), self.baseline_aggregation_box, QLabel("over"),
                  self.baseline_window_edit):
            baseline_row.addWidget(w)
        self.message_edit = QLineEdit(r.message)
        self.message_edit.setPlaceholderText(
            "e.g. GPU {gpu} is at {value:.0f} °C for {held}  (empty: a generated text)")
        self.hint_edit = QLineEdit(r.hint)
        self.hint_edit.setPlaceholderText("what to do about it, e.g. check the fans")
        self.enabled_box = QCheckBox("Enabled")
        self.enabled_box.setChecked(r.enabled)

        form = QFormLayout()
        for label, field in (("Name", self.name_edit), ("Title", self.title_edit),
                             ("Description", self.description_edit), ("Metric", self.metric_box),
                             ("Series (labels)", self.match_edit), ("Aggregation", self.aggregation_box),
                             ("Window", self.window_edit), ("Baseline", baseline_row), ("Comparison", self.op_box),
                             ("Threshold", self.threshold_edit), ("For", self.for_edit),
                             ("Or no data for", self.absent_edit), ("Cooldown", self.cooldown_edit),
                             ("Severity", self.severity_box), ("Message", self.message_edit),
                             ("What to do", self.hint_edit), ("", self.enabled_box)):
            form.addRow(label, field)

        self.test_button = QPushButton("Test against the last hour")
        self.test_button.clicked.connect(self.test)
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(emphasis(BAD))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(test_row)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(620, self.sizeHint().height())

    def rule(self) -> Rule:
        """The rule the fields describe; raises :class:`RuleError` with a message for the user."""
        op = self.op_box.currentText()
        raw: dict[str, object] = {
            "name": self.name_edit.text().strip(), "title": self.title_edit.text().strip(),
            "description": self.description_edit.text().strip(), "metric": self.metric_box.currentText().strip(),
            "match": parse_match(self.match_edit.text()), "aggregation": self.aggregation_box.currentText().strip(),
            "window": self.window_edit.text().strip() or "0s", "op": op, "for": self.for_edit.text().strip() or "0s",
            "cooldown": self.cooldown_edit.text().strip() or "0s", "severity": self.severity_box.currentText(),
            "message": self.message_edit.text(), "hint": self.hint_edit.text().strip(),
            "enabled": self.enabled_box.isChecked(),
        }
        threshold = _threshold(self.threshold_edit.text(), op)
        if threshold is not None:
            raw["threshold"] = threshold
        if self.absent_edit.text().strip():
            raw["absent_for"] = self.absent_edit.text().strip()
        if self.baseline_box.isChecked():
            raw["baseline"] = {"aggregation": self.baseline_aggregation_box.currentText().strip(),
                               "window": self.baseline_window_edit.text().strip() or "1h"}
        rule = rule_from_dict(raw)
        if rule.name in self.taken:
            raise RuleError(f"another rule is already named {rule.name!r}", "name")
        return rule

    def test(self) -> None:
        """Replay the rule over the last hour of live data: "would have fired 3 times"."""
        try:
            rule = self.rule()
        except RuleError as exc:
            self.error.setText(str(exc))
            self.test_result.clear()
            return
        self.error.clear()
        now = self.clock()
        self.test_result.setText(replay(rule, self.source, now - TEST_SPAN_S, now).summary())

    def accept(self) -> None:
        try:
            self.result_rule = self.rule()
        except RuleError as exc:
            self.error.setText(str(exc))
            return
        super().accept()
