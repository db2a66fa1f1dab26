"""``main.py install`` (what ``./run install`` runs) puts a valid launcher and the icon sizes in
the user's folders, the launcher starts llmmon, and ``uninstall`` takes it all out again."""
from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

from app.config import data_dir
from app.desktop_entry import ICON_SIZES, autostart_path, entry_path, icon_path, set_autostart
from widgets.app_icon import ICON_SVG

ROOT = Path(__file__).resolve().parents[2]


def llmmon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_install_launch_and_uninstall(tmp_path: Path) -> None:
    done = llmmon("install")
    assert done.returncode == 0, done.stderr
    entry = entry_path()
    assert f"installed {entry}" in done.stdout
    valid = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert valid.returncode == 0 and valid.stdout == "", valid.stdout
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(entry, encoding="utf-8")
    desktop = parsed["Desktop Entry"]
    assert (desktop["Name"], desktop["Icon"], desktop["StartupWMClass"]) == ("llmmon", "llmmon", "llmmon")

    for size in ICON_SIZES:
        image = QImage(str(icon_path(size)))
        assert (image.width(), image.height()) == (size, size)
        assert image.pixelColor(size // 2, size // 5).alpha() == 255  # the drawing...
        assert image.pixelColor(0, 0).alpha() == 0                    # ...with rounded, see-through corners
    assert icon_path(None).read_bytes() == ICON_SVG.read_bytes()

    # The launcher starts this llmmon, as the desktop would (plus --smoke so it ends by itself).
    argv = shlex.split(desktop["Exec"])
    assert argv == [os.path.abspath(sys.executable), str(ROOT / "main.py")]
    smoke = subprocess.run([*argv, "--smoke", "--db", str(tmp_path / "launched.db")], cwd=tmp_path,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, capture_output=True, text=True,
                           timeout=120)
    assert smoke.returncode == 0, smoke.stderr
    assert "window shown" in smoke.stdout

    set_autostart(True)
    user_db = data_dir() / "llmmon.db"  # the user's data lives under the same XDG data folder
    user_db.parent.mkdir(parents=True, exist_ok=True)
    user_db.write_bytes(b"data")
    done = llmmon("uninstall")
    assert done.returncode == 0, done.stderr
    for path in [entry, autostart_path(), icon_path(None), *(icon_path(size) for size in ICON_SIZES)]:
        assert not path.exists(), path
        assert str(path) in done.stdout
    assert user_db.read_bytes() == b"data"
    assert "nothing to remove" in llmmon("uninstall").stdout
