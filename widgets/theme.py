"""Colours and pyqtgraph settings that follow the system's light or dark palette.

Each metric gets the same colour everywhere (a chart, its legend, the header strip), so a user
learns once that CPU is blue and memory is orange; and each state too (:data:`GOOD`,
:data:`WARN`, :data:`BAD`, :data:`SEVERITY_COLOURS`): every widget takes its colours from here.
"""
from __future__ import annotations

import os

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleOption, QWidget

from app.records import SeriesKey

THEME_ENV = "LLMMON_THEME"  # "dark" or "light" overrides what the system says

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#B8A400"]

# What a colour means, in every widget (text, tree items, badges, the tray icon).
GOOD = PALETTE[2]    # bluish green: up, healthy, all in VRAM
WARN = PALETTE[1]    # orange: needs attention, degraded, not recording
BAD = PALETTE[5]     # vermilion: down, failed, critical
INFO = PALETTE[0]    # blue
SEVERITY_COLOURS = {"info": INFO, "warning": WARN, "critical": BAD}

SERIES_COLOURS = {
    "system_cpu_percent": PALETTE[0],
    "system_memory_percent": PALETTE[1],
}
_assigned: dict[SeriesKey, str] = {}


def emphasis(colour: str) -> str:
    """The style sheet of a status text in ``colour`` (bold, so it reads in either palette)."""
    return f"color: {colour}; font-weight: bold"


MUTED = "color: palette(placeholder-text);"  # muted yet readable text: a disabled grey is not, on light


def restyle(widget: QWidget, style_sheet: str) -> None:
    """Give ``widget`` this style sheet, if it has another: Qt re-polishes and repaints the
    widget on every ``setStyleSheet`` call, even with the same text (once a second in the
    header strip and the status bar, that was a repaint of each for nothing)."""
    if widget.styleSheet() != style_sheet:
        widget.setStyleSheet(style_sheet)


def colour_for(name: str, index: int = 0) -> str:
    """The colour of a metric (stable), or the ``index``-th palette colour for unknown ones."""
    return SERIES_COLOURS.get(name, PALETTE[index % len(PALETTE)])


def colour_for_key(key: SeriesKey) -> str:
    """A series' colour: its metric's own colour if it has one, else a palette colour given on
    first sight and kept for the whole run, so a series never changes colour between redraws."""
    if key[0] in SERIES_COLOURS and not key[1]:
        return SERIES_COLOURS[key[0]]
    if key not in _assigned:
        _assigned[key] = PALETTE[len(_assigned) % len(PALETTE)]
    return _assigned[key]


def is_dark() -> bool:
    if QApplication.instance() is None:
        return False
    window = QApplication.palette().color(QPalette.ColorRole.Window)
    return window.lightness() < 128


def _dark_palette() -> QPalette:
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#202428", QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#16191c", QPalette.ColorRole.AlternateBase: "#22262a",
        QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#2a2f34",
        QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#0072B2",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2a2f34",
        QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.Mid: "#8a9199",
        QPalette.ColorRole.PlaceholderText: "#8a9199", QPalette.ColorRole.Link: "#56B4E9",
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    # Disabled text muted like Qt's own light palette does; WindowText too, or a form's labels
    # (and a disabled group's title) look as live as the enabled ones.
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7178"))
    # A disabled field's placeholder dimmer still (it was as bright as in a live field): below
    # the disabled text, as the live placeholder is below the live text
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.PlaceholderText, QColor("#50565c"))
    return p


class OutlinedIndicators(QProxyStyle):
    """Fusion, with check boxes and radio buttons (in forms and menus) outlined in the palette's
    muted colour: Fusion outlines them a shade darker than the window, which on a dark window
    leaves an unticked box invisible, so a switch cannot be told from a plain label."""

    def __init__(self) -> None:
        super().__init__("Fusion")

    def drawPrimitive(self, element: QStyle.PrimitiveElement, option: QStyleOption,  # noqa: N802 (Qt's naming)
                      painter: QPainter, widget: QWidget | None = None) -> None:
        super().drawPrimitive(element, option, painter, widget)
        shape = {QStyle.PrimitiveElement.PE_IndicatorCheckBox: "box",
                 QStyle.PrimitiveElement.PE_IndicatorRadioButton: "circle"}.get(element)
        if shape is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, shape == "circle")
        painter.setPen(option.palette.color(QPalette.ColorRole.Mid))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        rect = option.rect.adjusted(0, 0, -1, -1)
        painter.drawRect(rect) if shape == "box" else painter.drawEllipse(rect.adjusted(1, 1, -1, -1))
        painter.restore()


_system_look: tuple[str, QPalette] | None = None  # the style and palette Qt started with


def apply_colour_scheme(app: QApplication, theme: str = "system") -> str:
    """Use ``theme`` ("system", "light" or "dark"; ``$LLMMON_THEME`` overrides it); returns the
    scheme applied. Can be called again while running (the settings dialog): widgets and
    charts take the new colours at once.

    Qt follows the system palette by itself where a platform theme exists; where it reports a
    dark preference without providing a dark palette (or the user wants the other scheme),
    llmmon sets its own palette on the Fusion style so every widget and chart agrees."""
    global _system_look
    if _system_look is None:
        _system_look = (app.style().name(), app.palette())
    wanted = os.environ.get(THEME_ENV, "").lower()
    if wanted not in ("dark", "light"):
        wanted = theme
    if wanted not in ("dark", "light"):
        dark = app.styleHints().colorScheme() == Qt.ColorScheme.Dark
        wanted = "dark" if dark else "light"
    style, palette = _system_look
    system_dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    if (wanted == "dark") == system_dark:
        app.setStyle(style)
        app.setPalette(palette)
    else:
        app.setStyle(OutlinedIndicators() if wanted == "dark" else "Fusion")
        app.setPalette(_dark_palette() if wanted == "dark" else app.style().standardPalette())
    apply_plot_theme()
    _recolour_plots(app)
    return wanted


def _recolour_plots(app: QApplication) -> None:
    """Charts already on screen take the palette's background and text colours."""
    background = app.palette().color(QPalette.ColorRole.Base)
    foreground = app.palette().color(QPalette.ColorRole.Text)
    for widget in app.allWidgets():
        if isinstance(widget, pg.PlotWidget):
            widget.setBackground(background)
            for axis in widget.getPlotItem().axes.values():
                axis["item"].setPen(foreground)
                axis["item"].setTextPen(foreground)


def apply_plot_theme() -> None:
    """Configure pyqtgraph from the current Qt palette; call once after QApplication exists."""
    palette = QApplication.palette() if QApplication.instance() is not None else QPalette()
    background = palette.color(QPalette.ColorRole.Base)
    foreground = palette.color(QPalette.ColorRole.Text)
    pg.setConfigOptions(antialias=False, background=background, foreground=foreground)


def muted(colour: QColor | str, alpha: int = 60) -> QColor:
    c = QColor(colour)
    c.setAlpha(alpha)
    return c
