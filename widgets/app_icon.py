"""llmmon's icon (``app/resources/llmmon.svg``): the window and tray icon, and the PNG sizes of the
desktop's icon theme, rendered from the SVG with Qt's SVG renderer."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

from app.resources import ICON, resource_path

ICON_SVG = resource_path(ICON)


def app_icon() -> QIcon:
    return QIcon(str(ICON_SVG))


def render_png(size: int, path: Path) -> Path:
    """The icon as a ``size``×``size`` PNG with a transparent background."""
    renderer = QSvgRenderer(str(ICON_SVG))
    if not renderer.isValid():
        raise OSError(f"cannot read the icon {ICON_SVG}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(path)):  # PNG, from the file name
        raise OSError(f"cannot write {path}")
    return path
