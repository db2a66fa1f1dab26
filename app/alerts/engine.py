"""The alert engine: evaluates the rules against the live series and tracks each alert's state.

An *alert* is one rule applied to one matching series (one per server, model, GPU...). Every
tick the engine aggregates each series over the rule's window and moves the alert through
``inactive → pending → firing → inactive``::

    condition true            → pending   (or straight to firing when the rule has no "for")
    pending for ``for`` secs  → firing    (notified unless within ``cooldown`` of its last
                                           notified firing, or snoozed)
    condition false           → resolved  (from firing, notified when its firing was; from
                                           pending it is just cleared)

"Pending" means only "the condition holds, its ``for`` has not elapsed": an alert back within
its cooldown is firing (listed and counted as such), just not announced again. What each
event says is a sentence from :mod:`app.alerts.sentence`. After a restart, :meth:`AlertEngine.restore`
takes up every alert's last state from ``alert_events``, so an alert does not notify again
because llmmon restarted.

Each transition — and each acknowledge or snooze — becomes one :class:`~app.records.AlertEvent`
published through the hub (the store writes it to ``alert_events``) and one
:class:`~app.alerts.transition.Transition` handed to the listeners (the notifier, the GUI). Time comes from an
injectable clock, so tests drive hours of alerting in microseconds.

>>> from app.buffers import LiveBuffers
>>> from app.alerts.rules import Rule
>>> from app.records import Sample
>>> buffers = LiveBuffers()
>>> engine = AlertEngine(buffers, [Rule("hot", "gpu_temperature_celsius", threshold=85, for_s=60)])
>>> buffers.add([Sample("gpu_temperature_celsius", 90.0, 0.0, (("gpu", "0"),))])
>>> [t.event.state for t in engine.evaluate(0.0)], [t.event.state for t in engine.evaluate(60.0)]
(['pending'], ['firing'])
"""
from __future__ import annotations

import logging
import math
import operator
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from app.alerts.history import AlertState, last_states
from app.alerts.rules import SEVERITY_RANK, Rule, RuleFile, load_rules, percentile_of
from app.alerts.sentence import firing_sentence, pending_sentence, resolved_sentence, with_names
from app.alerts.transition import Transition
from app.durations import format_duration
from app.records import AlertEvent, Labels, Record, SeriesKey
from app.storage.store import connect

if TYPE_CHECKING:
    from app.alerts.notify import Notifier

log = logging.getLogger(__name__)

__all__ = ["AlertEngine", "AlertView", "SeriesSource", "aggregate", "replay", "ReplayResult"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


class SeriesSource(Protocol):
    """Where the engine reads series: :class:`~app.buffers.LiveBuffers` is one."""

    def keys(self, name: str | None = None) -> list[SeriesKey]: ...

    def window(self, key: SeriesKey, since: float | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class AlertView:
    """A snapshot of one pending or firing alert, safe to hand to the GUI thread."""

    rule: str
    title: str
    severity: str
    labels: Labels
    state: str                 # "pending" or "firing"
    since: float               # when the condition became true
    fired_at: float | None
    value: float | None
    message: str
    acknowledged: bool
    snoozed_until: float | None
    hint: str = ""

    @property
    def key(self) -> tuple[str, Labels]:
        return (self.rule, self.labels)


@dataclass
class _Alert:
    """The engine's mutable state of one alert (engine lock held)."""

    rule: str
    labels: Labels
    state: str = "inactive"
    since: float = 0.0
    fired_at: float | None = None
    last_fired: float | None = None
    value: float | None = None
    message: str = ""
    acknowledged: bool = False
    snoozed_until: float | None = None
    restored: bool = False     # taken up from the store, its series not read since
    announced: bool = False    # its firing was notified: its resolution is notified too

    def snoozed(self, now: float) -> bool:
        return self.snoozed_until is not None and now < self.snoozed_until


# ---------------------------------------------------------------------------- aggregation
def aggregate(aggregation: str, ts: np.ndarray, values: np.ndarray) -> float | None:
    """One number from a window of points, or ``None`` when the window cannot give one.

    ``rate`` is per second and counter-aware (a drop is taken as a reset, like Prometheus);
    ``pNN``/``median`` interpolate linearly between points.

    >>> aggregate("rate", np.array([0., 10., 20.]), np.array([100., 150., 30.]))
    4.0
    >>> aggregate("p50", np.array([0., 1., 2., 3.]), np.array([4., 1., 3., 2.]))
    2.5
    """
    if len(values) == 0:
        return None
    with np.errstate(all="ignore"):  # inf - inf in a percentile is nan, which compares false: no warning
        return _aggregate(aggregation, ts, values)


def _aggregate(aggregation: str, ts: np.ndarray, values: np.ndarray) -> float | None:
    if aggregation == "last":
        return float(values[-1])
    if aggregation == "avg":
        return float(values.mean())
    if aggregation == "min":
        return float(values.min())
    if aggregation == "max":
        return float(values.max())
    if aggregation == "rate":
        if len(values) < 2 or ts[-1] <= ts[0]:
            return None
        deltas = np.diff(values)
        increase = deltas[deltas >= 0].sum() + values[1:][deltas < 0].sum()
        return float(increase / (ts[-1] - ts[0]))
    q = percentile_of(aggregation)
    if q is None:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    return float(np.percentile(values, q))


@dataclass(frozen=True)
class _Observation:
    labels: Labels
    value: float | None
    active: bool
    absent: bool


def _between(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] < value < bounds[1]


def _observe(rule: Rule, source: SeriesSource, now: float, running_since: float) -> list[_Observation]:
    """Aggregate every series the rule selects, as of ``now``."""
    lookback = max(rule.window, rule.absent_for or 0.0, rule.baseline.window if rule.baseline else 0.0)
    # Series with no sample since this time are absent (None: the rule cannot tell absence yet).
    absent_since = (now - rule.absent_for
                    if rule.absent_for is not None and now - running_since >= rule.absent_for else None)
    keys = [k for k in source.keys(rule.metric) if rule.matches(k[1])]
    out = []
    for key in keys:
        ts, values = source.window(key, now - lookback)
        end = int(np.searchsorted(ts, now, side="right"))  # replays look at the past
        ts, values = ts[:end], values[:end]
        since = now - rule.window if rule.window else -math.inf
        first = int(np.searchsorted(ts, since, side="left"))
        value = aggregate(rule.aggregation, ts[first:], values[first:])
        if value is not None and rule.baseline is not None:
            b = rule.baseline
            start = int(np.searchsorted(ts, now - b.window, side="left"))
            base = aggregate(b.aggregation, ts[start:], values[start:]) if end - start >= b.min_samples else None
            value = value / base if base else None
        absent = absent_since is not None and (len(ts) == 0 or ts[-1] < absent_since)
        out.append(_Observation(key[1], value, absent or _condition(rule, value), absent))
    if not keys and absent_since is not None and (rule.exact_labels() or not rule.match):
        # Never seen at all: one alert named by the labels the rule pins (Prometheus' absent()).
        out.append(_Observation(rule.exact_labels(), None, True, True))
    return out


def _restore_grace(rule: Rule) -> float:
    """How long after a start a restored alert waits for its series before it counts as gone:
    the collectors' first polls, and the rule's window filling up again."""
    return max(rule.window, rule.absent_for or 0.0, 60.0)


def _condition(rule: Rule, value: float | None) -> bool:
    if value is None or rule.threshold is None:
        return False
    if isinstance(rule.threshold, tuple):
        return _between(value, rule.threshold)
    return _COMPARE[rule.op](value, rule.threshold)


def labels_text(labels: Labels) -> str:
    """``server=ollama@…, model=llama3`` — the labels of an alert as the log names them (what
    users read is :mod:`app.alerts.sentence`)."""
    return ", ".join(f"{k}={v}" for k, v in labels)


# ---------------------------------------------------------------------------- the engine
Listener = Callable[[list[Transition], float], None]


class AlertEngine:
    """Evaluates rules on a tick; thread-safe; Qt-free.

    Args:
        source: the series to read (the hub's live buffers).
        rules: the rules to evaluate (disabled ones are kept but skipped).
        publish: where :class:`AlertEvent` records go (``hub.publish`` → ``alert_events``).
        clock: UTC epoch seconds; tests pass a fake.
        interval: seconds between evaluations on the engine's own thread.
    """

    def __init__(self, source: SeriesSource, rules: list[Rule] | None = None,
                 publish: Callable[[list[Record]], None] | None = None,
                 clock: Callable[[], float] = time.time, interval: float = 1.0) -> None:
        self.source = source
        self.publish = publish
        self.clock = clock
        self.interval = interval
        self.rule_file = RuleFile(rules=list(rules or []))
        self.notifier: Notifier | None = None  # set by app.runtime.build_alert_engine
        self.names: Callable[[str], str] = str  # a server's display name (the runtime sets it)
        self._rules: dict[str, Rule] = {r.name: r for r in self.rule_file.rules}
        self._alerts: dict[tuple[str, Labels], _Alert] = {}
        self._listeners: list[Listener] = []
        self._started_at: float | None = None
        self._errors: dict[str, str] = {}          # rule name -> why its last evaluation failed
        self._logged: set[tuple[str, str]] = set()  # (rule, error type) already logged
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules.values())

    @property
    def problems(self) -> list[str]:
        """What is wrong with the rules: the rule file's problems, then the rules whose last
        evaluation failed."""
        with self._lock:
            return [*self.rule_file.problems, *self._errors.values()]

    def load(self, path: Path) -> RuleFile:
        """(Re)read a rule file and use its rules; returns what was read."""
        rule_file = load_rules(path)
        self.rule_file = rule_file
        self.set_rules(rule_file.rules)
        if self.notifier is not None:
            self.notifier.configure(rule_file.notifications)
        return rule_file

    def reload(self) -> RuleFile:
        return self.load(self.rule_file.path) if self.rule_file.path else self.rule_file

    def set_rules(self, rules: list[Rule]) -> None:
        """Use new rules. Alerts of rules that are gone, disabled or changed are resolved."""
        now = self.clock()
        new = {r.name: r for r in rules}
        transitions = []
        with self._lock:
            for key, alert in list(self._alerts.items()):
                old, rule = self._rules.get(alert.rule), new.get(alert.rule)
                if rule is not None and rule.enabled and rule == old:
                    continue
                if alert.state != "inactive" and old is not None:
                    alert.value = None
                    transitions.append(self._move(old, alert, "resolved", now,
                                                  notify=alert.state == "firing" and alert.announced,
                                                  message="The rule was changed or removed."))
                del self._alerts[key]
            self._rules = new
            self._errors = {name: error for name, error in self._errors.items() if name in new}
        self._emit(transitions, now)

    # ------------------------------------------------------------------ listeners
    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call ``fn(transitions, now)`` after every evaluation (also with no transitions, so a
        listener can do timed work on the engine's tick); returns a remove function."""
        self._listeners = [*self._listeners, fn]

        def remove() -> None:
            self._listeners = [f for f in self._listeners if f is not fn]
        return remove

    def _emit(self, transitions: list[Transition], now: float) -> None:
        if transitions and self.publish is not None:
            try:
                self.publish([t.event for t in transitions])
            except Exception:  # the listeners still hear about it
                log.exception("alert events could not be published")
        for fn in self._listeners:
            try:
                fn(transitions, now)
            except Exception:
                log.exception("alert listener %r failed", fn)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, now: float | None = None) -> list[Transition]:
        """Evaluate every enabled rule once, as of ``now``; returns the transitions."""
        now = self.clock() if now is None else now
        transitions: list[Transition] = []
        with self._lock:
            if self._started_at is None:
                self._started_at = now
            for rule in self._rules.values():
                if not rule.enabled:
                    continue
                try:
                    transitions.extend(self._evaluate_rule(rule, now, self._started_at))
                except Exception as exc:  # one bad rule or series must not stop the others
                    self._rule_failed(rule, exc)
                else:
                    self._errors.pop(rule.name, None)
        self._emit(transitions, now)
        return transitions

    def _evaluate_rule(self, rule: Rule, now: float, started_at: float) -> list[Transition]:
        transitions: list[Transition] = []
        seen = set()
        for obs in _observe(rule, self.source, now, started_at):
            key = (rule.name, obs.labels)
            seen.add(key)
            alert = self._alerts.get(key)
            if alert is None:
                if not obs.active:
                    continue
                alert = self._alerts[key] = _Alert(rule.name, obs.labels)
            transitions.extend(self._step(rule, alert, obs, now))
        for key, alert in list(self._alerts.items()):
            if key[0] == rule.name and key not in seen:  # the series went away
                transitions.extend(self._step(rule, alert, _Observation(alert.labels, None, False, False), now))
        for key in [k for k, a in self._alerts.items()
                    if k[0] == rule.name and a.state == "inactive"
                    and not self._cooling(rule, a, now) and not a.snoozed(now)]:
            del self._alerts[key]  # nothing left to remember (no cooldown running)
        return transitions

    def _rule_failed(self, rule: Rule, exc: Exception) -> None:
        """Mark ``rule`` as erroring (shown in :attr:`problems` until it evaluates again); the
        traceback is logged once per rule and kind of error, not on every tick."""
        where = f" (line {rule.line})" if rule.line else ""
        self._errors[rule.name] = (f"rule {rule.name!r}{where} cannot be evaluated: {type(exc).__name__}: "
                                   f"{exc}; the other rules go on")
        kind = (rule.name, type(exc).__name__)
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("alert %s (logged once for this rule and error)", self._errors[rule.name], exc_info=exc)

    def _step(self, rule: Rule, alert: _Alert, obs: _Observation, now: float) -> list[Transition]:
        if alert.restored and not obs.active and obs.value is None and not obs.absent \
                and now - (self._started_at or now) < _restore_grace(rule):
            return []  # restored from the store, its series not read again yet: wait for data
        alert.restored = False
        alert.value = obs.value
        shown = with_names(obs.labels, self.names)  # a renamed server's alerts say its new name
        if not obs.active:
            if alert.state == "firing":
                return [self._move(rule, alert, "resolved", now, notify=alert.announced and not alert.snoozed(now),
                                   message=resolved_sentence(rule, shown, obs.value))]
            if alert.state == "pending":
                return [self._move(rule, alert, "resolved", now, notify=False,
                                   message="Cleared before firing: "
                                           + resolved_sentence(rule, shown, obs.value))]
            return []
        out = []
        if alert.state == "inactive":
            alert.since = now
            if rule.for_s > 0:
                out.append(self._move(rule, alert, "pending", now, notify=False,
                                      message=pending_sentence(rule, shown, obs.value, obs.absent)))
        alert.message = firing_sentence(rule, shown, obs.value, now - alert.since, obs.absent)
        if alert.state != "firing" and now - alert.since >= rule.for_s:
            # Within the cooldown the alert fires all the same (it is shown and counted as
            # firing); only the notification is held back.
            cooling = self._cooling(rule, alert, now)
            alert.fired_at = now
            if not cooling:
                alert.last_fired = now
            alert.announced = not cooling and not alert.snoozed(now)
            out.append(self._move(rule, alert, "firing", now, notify=alert.announced))
        return out

    @staticmethod
    def _cooling(rule: Rule, alert: _Alert, now: float) -> bool:
        return alert.last_fired is not None and now - alert.last_fired < rule.cooldown

    def _move(self, rule: Rule, alert: _Alert, state: str, now: float, *, notify: bool,
              message: str = "") -> Transition:
        if state in ("pending", "firing"):
            alert.state = state
        elif state == "resolved":
            alert.state = "inactive"
            alert.acknowledged = False
            alert.fired_at = None
        event = AlertEvent(rule.name, state, rule.severity, now, alert.labels, alert.value,
                           message or alert.message)
        log.info("alert %s{%s} %s: %s", rule.name, labels_text(alert.labels), state, event.message)
        return Transition(event, rule.label, notify, rule.hint)

    # ------------------------------------------------------------------ restart
    def restore_from(self, db: Path) -> int:
        """:meth:`restore` from the ``alert_events`` of a database; an unreadable one is logged
        and the engine starts afresh (alerts of the previous run may then notify again)."""
        try:
            with closing(connect(db, readonly=True)) as conn:
                states = last_states(conn)
        except sqlite3.Error as exc:
            log.warning("alerts: cannot read the previous run's alert states from %s: %s", db, exc)
            return 0
        return self.restore(states)

    def restore(self, states: list[AlertState]) -> int:
        """Take up the alerts' states of the previous run (:func:`app.alerts.history.last_states`),
        before the first evaluation: an alert that was firing (and notified) stays firing without
        a new notification; one whose condition ended while llmmon was down resolves at the first
        evaluation that reads its series; a past firing still inside its cooldown keeps the
        cooldown. A pending alert starts its ``for`` again. Returns how many alerts were taken up."""
        now = self.clock()
        taken = 0
        with self._lock:
            for st in states:
                rule = self._rules.get(st.rule)
                if rule is None or not rule.enabled or (st.rule, st.labels) in self._alerts:
                    continue
                cooling = st.last_fired is not None and now - st.last_fired < rule.cooldown
                if st.state not in ("firing", "pending") and not cooling:
                    continue
                alert = _Alert(st.rule, st.labels, last_fired=st.last_fired, value=st.value,
                               message=st.message, restored=True)
                if st.state == "firing":
                    alert.state, alert.since, alert.fired_at = "firing", st.since, st.ts
                    alert.acknowledged, alert.announced = st.acknowledged, True
                elif st.state == "pending":
                    alert.state, alert.since = "pending", now
                self._alerts[(st.rule, st.labels)] = alert
                taken += 1
        if taken:
            log.info("alerts: took up %d alert state(s) from the previous run", taken)
        return taken

    # ------------------------------------------------------------------ user actions
    def acknowledge(self, rule: str, labels: Labels) -> bool:
        """Mark a firing alert as seen: it stays listed but no longer colours the tray.
        Returns False when there is no such firing alert."""
        return self._user_action(rule, labels, "acknowledged", None)

    def snooze(self, rule: str, labels: Labels, seconds: float) -> bool:
        """Silence an alert's notifications for ``seconds`` (it is still evaluated and listed)."""
        return self._user_action(rule, labels, "snoozed", seconds)

    def _user_action(self, rule_name: str, labels: Labels, state: str, seconds: float | None) -> bool:
        now = self.clock()
        with self._lock:
            alert, rule = self._alerts.get((rule_name, labels)), self._rules.get(rule_name)
            if alert is None or rule is None or alert.state == "inactive":
                return False
            if state == "acknowledged":
                if alert.state != "firing":
                    return False
                alert.acknowledged = True
                message = "acknowledged"
            else:
                alert.snoozed_until = now + (seconds or 0.0)
                message = f"snoozed for {format_duration(seconds or 0.0)}"
            transition = Transition(AlertEvent(rule.name, state, rule.severity, now, labels,
                                               alert.value, message), rule.label, False, rule.hint)
        self._emit([transition], now)
        return True

    # ------------------------------------------------------------------ reading
    def alerts(self) -> list[AlertView]:
        """Pending and firing alerts, worst first."""
        with self._lock:
            views = [AlertView(a.rule, self._rules[a.rule].label, self._rules[a.rule].severity,
                               a.labels, a.state, a.since, a.fired_at, a.value, a.message,
                               a.acknowledged, a.snoozed_until, self._rules[a.rule].hint)
                     for a in self._alerts.values() if a.state != "inactive" and a.rule in self._rules]
        return sorted(views, key=lambda v: (v.state != "firing", -SEVERITY_RANK[v.severity], v.since))

    def worst_firing(self) -> tuple[str | None, int]:
        """The worst severity among firing, unacknowledged alerts, and how many there are."""
        firing = [a for a in self.alerts() if a.state == "firing" and not a.acknowledged]
        if not firing:
            return None, 0
        return max((a.severity for a in firing), key=SEVERITY_RANK.__getitem__), len(firing)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Evaluate every ``interval`` seconds on a thread of its own; start the notifier."""
        if self._thread is not None:
            return
        if self.notifier is not None:
            self.notifier.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="llmmon-alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.evaluate()
            except Exception:  # keep alerting alive whatever one evaluation hit
                log.exception("alert evaluation failed")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.notifier is not None:
            self.notifier.stop(timeout)


# ---------------------------------------------------------------------------- replay
@dataclass(frozen=True)
class ReplayResult:
    """What a rule would have done over a past period."""

    fired: int          # firing transitions (cooldown respected)
    series: int         # series the rule selected
    evaluations: int
    start: float
    end: float

    def summary(self) -> str:
        span = format_duration(self.end - self.start)
        if not self.series:
            return "No series match this rule yet: nothing to test against."
        times = "once" if self.fired == 1 else f"{self.fired} times"
        return f"Would have fired {times} in the last {span} ({self.series} series checked)."


class _Snapshot:
    """The series of one metric, read once from a source, sliced for each replay step."""

    def __init__(self, source: SeriesSource, metric: str, since: float) -> None:
        self._data = {k: source.window(k, since) for k in source.keys(metric)}

    def keys(self, name: str | None = None) -> list[SeriesKey]:
        return [k for k in self._data if name is None or k[0] == name]

    def window(self, key: SeriesKey, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        ts, values = self._data.get(key, (np.empty(0), np.empty(0)))
        first = int(np.searchsorted(ts, since, side="left")) if since is not None else 0
        return ts[first:], values[first:]


def replay(rule: Rule, source: SeriesSource, start: float, end: float, step: float = 5.0) -> ReplayResult:
    """Run ``rule`` over ``[start, end]`` of past data: "would have fired N times"."""
    lookback = max(rule.window, rule.absent_for or 0.0, rule.baseline.window if rule.baseline else 0.0)
    snapshot = _Snapshot(source, rule.metric, start - lookback)
    engine = AlertEngine(snapshot, [replace(rule, enabled=True)])
    fired = 0
    evaluations = 0
    for now in np.arange(start, end + step / 2, step):
        fired += sum(t.event.state == "firing" and t.notify for t in engine.evaluate(float(now)))
        evaluations += 1
    series = sum(1 for k in snapshot.keys(rule.metric) if rule.matches(k[1]))
    return ReplayResult(fired, series, evaluations, start, end)
