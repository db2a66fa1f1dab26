"""Building blocks of the settings pages: a text field checked by the setting's own check
(:func:`app.config.check_setting`) that shows why a value is refused right under it, notes,
and the scrolling page every settings page sits in (so the dialog fits a small screen)."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QFrame, QLabel, QLineEdit, QScrollArea, QVBoxLayout, QWidget

from app.config import Invalid, check_setting
from widgets.theme import MUTED, PALETTE

ERROR_COLOUR = PALETTE[5]
ERROR_STYLE = f"color: {ERROR_COLOUR}"


def parse_typed(text: str) -> object:
    """What the user typed as the value a config file would hold: a whole number, a number,
    else the text itself (``never``, a URL).

    >>> parse_typed(" 30 "), parse_typed("2.5"), parse_typed("never"), parse_typed("")
    (30, 2.5, 'never', '')
    """
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def shown(value: object) -> str:
    """A setting's value in its field: whole numbers without ``.0``, no limit as ``never``."""
    if value is None:
        return "never"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def refusal(where: str, exc: Exception, typed: object) -> str:
    """Why a value is refused, for the list under the pages: the field as the user sees it
    labelled, what it must be, what was typed.

    >>> refusal("Keep data for", ValueError("must be a number"), " soon ")
    'Keep data for: must be a number; “soon” is refused'
    """
    return f"{where}: {exc}; “{str(typed).strip()}” is refused"


def reason(exc: Exception, typed: object) -> str:
    """Why a value is refused, under its field (whose label already names it).

    >>> reason(ValueError("must be a number"), "soon")
    'Must be a number; “soon” is refused'
    """
    text = str(exc)
    return f"{text[:1].upper()}{text[1:]}; “{str(typed).strip()}” is refused"


def note(text: str = "") -> QLabel:
    """A wrapped explanation under a group of fields."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setStyleSheet(MUTED)
    return label


def error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.setVisible(False)
    return label


class CheckedLine(QLineEdit):
    """A field for one setting. :meth:`checked` returns the value or ``None`` after showing why
    it is refused (in :attr:`error`, under the field).

    Args:
        key: the setting (``"general.retention_days"``), whose check is used.
        where: how the list of refusals under the pages names the field (default: its label
            in the form, given by :func:`add_checked`; ``"URL of server 3"`` for an entry).
        check: another check (``value → value``, raising ``ValueError`` with the reason).
    """

    def __init__(self, key: str, where: str = "", check: Callable[[object], object] | None = None,
                 placeholder: str = "") -> None:
        super().__init__()
        self.key = key
        self.where = where or key
        self.check = check or (lambda value: check_setting(key, value))
        self.error = error_label()
        self.setPlaceholderText(placeholder)
        self.textEdited.connect(lambda _: self.clear_error())

    def clear_error(self) -> None:
        self.error.setVisible(False)
        self.setStyleSheet("")

    def refuse(self, reason: str) -> None:
        self.error.setText(reason)
        self.error.setVisible(True)
        self.setStyleSheet(f"border: 1px solid {ERROR_COLOUR}")

    def checked(self, errors: list[str]) -> tuple[bool, object]:
        """``(True, value)``, or ``(False, None)`` with the reason shown and added to ``errors``."""
        typed = self.text()
        try:
            value = self.check(parse_typed(typed))
        except (Invalid, ValueError) as exc:
            self.refuse(reason(exc, typed))
            errors.append(refusal(self.where, exc, typed))
            return False, None
        self.clear_error()
        return True, value


def add_checked(form: QFormLayout, label: str, line: CheckedLine, hint: str = "") -> None:
    """A labelled field with its error line (and an optional hint) under it."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    if line.where == line.key:  # named as labelled, not by its config key
        line.where = label
    layout.addWidget(line)
    layout.addWidget(line.error)
    if hint:
        layout.addWidget(note(hint))
    form.addRow(label, box)


def scrolling(page: QWidget) -> QScrollArea:
    """``page`` in a scroll area: a small screen scrolls the page instead of cutting it."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(page)
    return area
