"""llmmon's freedesktop.org entries: the application-menu launcher, its icons' places, and the
login autostart entry, all in the user's own folders (no root needed).

    $XDG_DATA_HOME/applications/llmmon.desktop            the launcher (``./run install``)
    $XDG_DATA_HOME/icons/hicolor/<N>x<N>/apps/llmmon.png  icons (and scalable/apps/llmmon.svg)
    $XDG_CONFIG_HOME/autostart/llmmon.desktop             start on login (a menu toggle)

Every entry runs this same llmmon: the frozen binary when llmmon is a PyInstaller build, else
this interpreter (the venv's python, so the venv's packages are used) with this ``main.py``.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

APP_ID = "llmmon"  # the .desktop file's name, the icon's name and the windows' X11 class
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256)
MAIN_PY = Path(__file__).resolve().parents[1] / "main.py"

# Desktop Entry Specification, "The Exec key": an argument holding one of these is quoted.
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def _xdg_home(variable: str, default: str) -> Path:
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / default  # relative values are invalid


def data_home() -> Path:
    return _xdg_home("XDG_DATA_HOME", ".local/share")


def config_home() -> Path:
    return _xdg_home("XDG_CONFIG_HOME", ".config")


def entry_path() -> Path:
    return data_home() / "applications" / f"{APP_ID}.desktop"


def autostart_path() -> Path:
    return config_home() / "autostart" / f"{APP_ID}.desktop"


def icon_path(size: int | None) -> Path:
    """The PNG of ``size`` pixels in the user's hicolor theme; ``None`` is the scalable SVG."""
    folder = "scalable" if size is None else f"{size}x{size}"
    return data_home() / "icons" / "hicolor" / folder / "apps" / (f"{APP_ID}.svg" if size is None else f"{APP_ID}.png")


def launcher_command() -> list[str]:
    """The command that starts this llmmon (not whichever ``llmmon`` is first on $PATH)."""
    if getattr(sys, "frozen", False):
        return [os.path.abspath(sys.executable)]
    # Not resolved: a venv's python is a symlink, and only through it are the venv's packages used.
    return [os.path.abspath(sys.executable), str(MAIN_PY)]


def exec_arg(arg: str) -> str:
    """One argument of an Exec line: ``%`` doubled, quoted when needed, then the file format's
    own escapes (backslash, newline, tab, carriage return)."""
    arg = arg.replace("%", "%%")
    if any(c in _RESERVED for c in arg):
        arg = '"' + re.sub(r'(["`$\\])', r"\\\1", arg) + '"'
    return arg.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def desktop_entry(command: list[str], *, autostart: bool = False) -> str:
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",
        "Name=llmmon",
        "GenericName=LLM server monitor",
        "Comment=Watch the LLM servers on this machine (Ollama, vLLM, llama.cpp), the GPU and every request",
        "Exec=" + " ".join(exec_arg(a) for a in command),
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=System;Monitor;",
        "Keywords=LLM;Ollama;vLLM;llama.cpp;GPU;tokens;monitor;",
        "StartupNotify=true",
        f"StartupWMClass={APP_ID}",
    ]
    if autostart:
        lines.append("X-GNOME-Autostart-enabled=true")
    return "\n".join(lines) + "\n"


def write_entry(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a desktop watching the folder never reads half a file
    return path


def set_autostart(enabled: bool) -> Path:
    """Write or remove the login autostart entry; returns its path."""
    path = autostart_path()
    if enabled:
        write_entry(path, desktop_entry(launcher_command(), autostart=True))
    else:
        path.unlink(missing_ok=True)
    return path
