"""The time range every chart shows: last 5 min / 1 h / 6 h / 24 h / whole session, live or
paused, or the fixed range of a past session opened read-only. One instance per window; charts
ask it for ``(t0, t1)`` on each redraw.

A session younger than the chosen span is shown from its start (a minute at least), so a new
session fills the chart instead of squeezing into its right edge. The window also carries the
draw-time smoothing setting: a moving average over ``smooth_points`` points that charts apply
to what they draw, never to what is stored."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

SPANS: list[tuple[str, float | None]] = [
    ("5 min", 300.0), ("1 h", 3600.0), ("6 h", 6 * 3600.0), ("24 h", 86400.0), ("Session", None),
]
MIN_SPAN_S = 60.0
"""The narrowest range a chart shows: a session seconds old still gets a readable time axis."""
SMOOTHING_CHOICES = (5, 15, 60)
"""Moving-average widths (points) the toolbar offers."""


class TimeWindow(QObject):
    """What range of time the charts show.

    ``span_s`` None means "the whole session". While ``paused`` the right edge stays where it
    was when the user paused. ``fixed`` (a past session) overrides both. ``session_start`` is
    the recording session's start (None while not recording): no range starts before it.
    ``smooth_points`` > 1 asks charts to draw a moving average over that many points.
    """

    changed = Signal()

    def __init__(self, span_s: float | None = 300.0, session_start: float | None = None) -> None:
        super().__init__()
        self.span_s = span_s
        self.session_start = session_start
        self.paused_at: float | None = None
        self.fixed: tuple[float, float] | None = None
        self.fixed_label = ""
        self.smooth_points = 0

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def live(self) -> bool:
        return self.fixed is None and self.paused_at is None

    def set_span(self, span_s: float | None) -> None:
        if span_s != self.span_s:
            self.span_s = span_s
            self.changed.emit()

    def set_session_start(self, start: float | None) -> None:
        """Follow a new recording session (or none)."""
        if start != self.session_start:
            self.session_start = start
            self.changed.emit()

    def set_smoothing(self, points: int) -> None:
        """Draw a moving average over ``points`` points (0 or 1: draw the data as it is)."""
        points = max(0, int(points))
        if points != self.smooth_points:
            self.smooth_points = points
            self.changed.emit()

    def set_paused(self, paused: bool, now: float) -> None:
        self.paused_at = now if paused else None
        self.changed.emit()

    def show_fixed(self, t0: float, t1: float, label: str) -> None:
        """Show a past session's range (read-only history)."""
        self.fixed = (t0, t1)
        self.fixed_label = label
        self.changed.emit()

    def back_to_live(self) -> None:
        self.fixed = None
        self.fixed_label = ""
        self.paused_at = None
        self.changed.emit()

    def range(self, now: float, from_session: bool = True) -> tuple[float, float]:
        """``(t0, t1)`` in UTC epoch seconds for a redraw at ``now``. ``from_session`` False
        ignores this machine's session (another machine's charts, in the Fleet tab)."""
        if self.fixed is not None:
            return self.fixed
        t1 = self.paused_at if self.paused_at is not None else now
        start = self.session_start if from_session else None
        if self.span_s is None:
            return (min(start, t1 - MIN_SPAN_S) if start is not None else t1 - 300.0), t1
        t0 = t1 - self.span_s
        if start is not None and start > t0:  # a young session: from its start, not a sliver
            t0 = min(start, t1 - MIN_SPAN_S)
        return t0, t1
