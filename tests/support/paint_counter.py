"""Counting a widget's paint events: how GUI tests check that a tick with nothing new to show
costs no drawing (the idle window's CPU is measured in bench/idle.py)."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QWidget


class PaintCounter(QObject):
    """Counts the paint events of the widgets it watches (``watch``)."""

    def __init__(self, *widgets: QWidget) -> None:
        super().__init__()
        self.paints = 0
        for widget in widgets:
            widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.Paint:
            self.paints += 1
        return False
