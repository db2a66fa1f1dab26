"""What every tab of the main window is: a widget the UI timer asks to redraw while visible; and
the shelf that keeps the tabs of server kinds nobody runs here out of the way."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QTableWidget,
    QTabWidget,
    QToolButton,
    QWidget,
)

from app.records import Health
from app.runtime import Runtime
from app.server_kinds import server_kind
from app.storage.reader import ReadConnection
from widgets.theme import MUTED
from widgets.time_window import TimeWindow

# Where a user adds a server by hand, for the "no server found" messages of the tabs.
ADD_SERVER = "File → Settings… → Servers"


class Panel(QWidget):
    """Base class of the main window's tabs.

    A panel reads the runtime's live buffers, hub health and store (never collectors), and
    redraws in :meth:`refresh`, which the main window calls on its UI timer only while the
    panel's tab is the visible one. A panel about one kind of server sets ``server_kind``: its
    tab shows once a server of that kind is configured or seen (see :class:`TabShelf`). It
    reads the database through :attr:`db` with the query functions of the core
    (``app/storage/queries.py``...), never SQL of its own.
    """

    title = ""
    server_kind: str | None = None

    def __init__(self, runtime: Runtime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        # The window's shared time range (set by the main window); charts built from
        # TimeSeriesPlot follow it by themselves, other views ask it for (t0, t1).
        self.view: TimeWindow | None = None
        # Its own read connection on the store's file, opened on first use (GUI thread only);
        # reset it after an sqlite3.Error so the next refresh reconnects.
        self.db = ReadConnection(runtime.store.reader)

    def refresh(self, now: float) -> None:
        """Redraw from current data. ``now`` is the UTC epoch time of this UI tick."""

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's naming)
        self.db.close()
        super().closeEvent(event)


def chart_grid(charts: Sequence[QWidget], columns: int) -> QWidget:
    """The charts in a grid, ``columns`` wide, as one widget (to hide them all at once)."""
    host = QWidget()
    grid = QGridLayout(host)
    grid.setContentsMargins(0, 0, 0, 0)
    grid.setSpacing(6)
    for i, chart in enumerate(charts):
        grid.addWidget(chart, i // columns, i % columns)
    return host


def note_label(text: str = "", padding: int = 24) -> QLabel:
    """A centred, wrapped, muted message that stands in for charts or a table with nothing to
    show."""
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setStyleSheet(f"{MUTED} padding: {padding}px;")
    return label


def read_only_table(headers: list[str]) -> QTableWidget:
    """A table of figures: one row selected at a time, cells not editable, columns as wide as
    their contents (the last one stretched)."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


class TabShelf:
    """Shows a server kind's tab only once a server of that kind is configured or seen; until
    then the tab waits in a "More" menu at the right end of the tab bar, from which the user can
    still open it. A tab that appeared stays for the rest of the run (no flapping when the
    server goes down: its tab then says so)."""

    def __init__(self, tabs: QTabWidget, panels: list[Panel], configured_kinds: Iterable[str] = ()) -> None:
        self.tabs = tabs
        self.panels = panels
        self.seen: set[str] = set(configured_kinds)
        self.opened: set[int] = set()   # tabs the user took off the shelf
        self.button = QToolButton()
        self.button.setText("More")
        self.button.setToolTip("Tabs for kinds of server not seen on this machine yet")
        self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.button.setAutoRaise(True)
        self.menu = QMenu(self.button)
        self.button.setMenu(self.menu)
        tabs.setCornerWidget(self.button, Qt.Corner.TopRightCorner)
        self._shelved: list[int] | None = None

    def wanted(self, index: int) -> bool:
        kind = self.panels[index].server_kind
        return kind is None or kind in self.seen or index in self.opened

    def sync(self, health: Iterable[Health]) -> None:
        """Show the tabs of every kind seen so far; shelve the others."""
        self.seen.update(h.kind for h in health)
        shelved = []
        for i in range(len(self.panels)):
            want = self.wanted(i)
            if self.tabs.isTabVisible(i) != want:
                self.tabs.setTabVisible(i, want)
            if not want:
                shelved.append(i)
        if shelved != self._shelved:
            self._shelved = shelved
            self.menu.clear()
            for i in shelved:
                kind = self.panels[i].server_kind or ""
                name = server_kind(kind).display_name
                action = QAction(f"{self.panels[i].title} (no {name} server seen yet)", self.menu)
                action.triggered.connect(lambda _=False, i=i: self.open(i))
                self.menu.addAction(action)
            self.button.setVisible(bool(shelved))

    def open(self, index: int) -> None:
        """Take a tab off the shelf and show it."""
        self.opened.add(index)
        self.tabs.setTabVisible(index, True)
        self.tabs.setCurrentIndex(index)
        self._shelved = None  # rebuild the menu on the next sync
        self.sync(())
