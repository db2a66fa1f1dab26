"""The toolbar's "Smooth" toggle: draw every chart as a moving average over N points, to read a
busy 1 Hz series as a trend. Draw-time only (see :func:`widgets.timeseries_plot.moving_average`):
the stored data, the legends' figures and exports stay as recorded. The choice is kept in
QSettings."""
from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QToolButton, QWidget

from widgets.time_window import SMOOTHING_CHOICES, TimeWindow

ON_SETTING, POINTS_SETTING = "window/smooth", "window/smooth_points"
DEFAULT_POINTS = SMOOTHING_CHOICES[0]


class SmoothingButton(QToolButton):
    """Checked: charts draw a moving average over the width chosen in its menu."""

    def __init__(self, view: TimeWindow, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.settings = settings
        self.setCheckable(True)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        menu = QMenu(self)
        group = QActionGroup(menu)
        self.width_actions: dict[int, QAction] = {}
        for points in SMOOTHING_CHOICES:
            action = QAction(f"Moving average over {points} points", menu)
            action.setCheckable(True)
            action.triggered.connect(lambda _=False, p=points: self.choose(p))
            group.addAction(action)
            menu.addAction(action)
            self.width_actions[points] = action
        self.setMenu(menu)
        saved = settings.value(POINTS_SETTING, DEFAULT_POINTS, type=int)
        self.points = saved if isinstance(saved, int) and saved in SMOOTHING_CHOICES else DEFAULT_POINTS
        self.width_actions[self.points].setChecked(True)
        self.setChecked(settings.value(ON_SETTING, False, type=bool) is True)
        self.toggled.connect(lambda _on: self._apply())
        self._apply()

    def choose(self, points: int) -> None:
        self.points = points
        if self.isChecked():
            self._apply()
        else:
            self.setChecked(True)  # picking a width turns smoothing on

    def _apply(self) -> None:
        on = self.isChecked()
        self.setText(f"Smooth ({self.points})" if on else "Smooth")
        self.setToolTip(f"Charts draw a moving average over {self.points} points (the data and the legends' "
                        "figures stay as recorded). Click to turn off; the arrow picks the width."
                        if on else "Draw a moving average to read busy series as a trend "
                        "(the data stays as recorded)")
        self.view.set_smoothing(self.points if on else 0)
        self.settings.setValue(ON_SETTING, on)
        self.settings.setValue(POINTS_SETTING, self.points)
