"""What every tab of the main window is: a widget the UI timer asks to redraw while visible."""
from __future__ import annotations

from PySide6.QtWidgets import QWidget

from app.runtime import Runtime
from widgets.time_window import TimeWindow


class Panel(QWidget):
    """Base class of the main window's tabs.

    A panel reads the runtime's live buffers, hub health and store (never collectors), and
    redraws in :meth:`refresh`, which the main window calls on its UI timer only while the
    panel's tab is the visible one.
    """

    title = ""

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        # The window's shared time range (set by the main window); charts built from
        # TimeSeriesPlot follow it by themselves, other views ask it for (t0, t1).
        self.view: TimeWindow | None = None

    def refresh(self, now: float) -> None:
        """Redraw from current data. ``now`` is the UTC epoch time of this UI tick."""
