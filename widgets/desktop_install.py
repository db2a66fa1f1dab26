"""Put llmmon in the desktop's application menu, or take it out again.

    main.py install      # what `./run install` runs
    main.py uninstall    # what `./run uninstall` runs

Install writes the launcher ($XDG_DATA_HOME/applications/llmmon.desktop, starting this llmmon
with this interpreter) and the icon in the sizes desktops ask for ($XDG_DATA_HOME/icons/hicolor/,
PNGs rendered from resources/llmmon.svg, and the SVG itself). Uninstall removes them and the
start-on-login entry. Your data, settings and logs are kept.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess

from app.desktop_entry import (
    ICON_SIZES,
    autostart_path,
    desktop_entry,
    entry_path,
    icon_path,
    launcher_command,
    write_entry,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: both commands work on the current user's folders."""


def run(args: argparse.Namespace) -> int:
    try:
        return install() if args.command == "install" else uninstall()
    except OSError as exc:
        print(f"llmmon {args.command}: {exc}")
        return 1


def install() -> int:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # drawing icons needs no screen (nor works without one)
    from PySide6.QtGui import QGuiApplication

    from widgets.app_icon import ICON_SVG, render_png

    _app = QGuiApplication.instance() or QGuiApplication(["llmmon"])  # QPainter needs one
    for size in ICON_SIZES:
        render_png(size, icon_path(size))
    scalable = icon_path(None)
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ICON_SVG, scalable)
    command = launcher_command()
    entry = write_entry(entry_path(), desktop_entry(command))
    _refresh_menus()
    print(f"llmmon: installed {entry}\n"
          f"        it runs: {' '.join(command)}\n"
          f"        icons in {scalable.parents[2]} ({len(ICON_SIZES)} sizes and SVG)\n"
          "llmmon is in your application menu; `./run uninstall` takes it out again.")
    return 0


def uninstall() -> int:
    paths = [entry_path(), autostart_path(), icon_path(None), *(icon_path(size) for size in ICON_SIZES)]
    removed = [p for p in paths if p.exists()]
    for path in removed:
        path.unlink()
    _refresh_menus()
    if removed:
        print("llmmon: removed\n" + "\n".join(f"        {p}" for p in removed))
    else:
        print("llmmon: nothing to remove (not installed for this user)")
    print("        your data, settings and logs are kept")
    return 0


def _refresh_menus() -> None:
    """Most desktops watch the folder; the ones that read a cache get it rebuilt (when the tool
    is there; nothing fails without it)."""
    tool = shutil.which("update-desktop-database")
    if tool:
        entry_path().parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([tool, "-q", str(entry_path().parent)], check=False, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
