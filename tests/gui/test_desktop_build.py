"""``scripts/build-app`` builds the one-folder PyInstaller app from ``llmmon.spec``, and the built
binary runs on a real X server: it shows its window and exits 0 (``--smoke``), records into its
database, and installs a desktop launcher that starts the binary itself."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from app.desktop_entry import entry_path
from tests.support import query
from tests.support.xdesktop import x_desktop

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_app_shows_its_window_records_and_installs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run([str(ROOT / "scripts" / "build-app"), str(dist)], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHON": sys.executable, "BUILD_DIR": str(tmp_path / "build")},
                           timeout=1800)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    binary = dist / "llmmon" / "llmmon"
    assert f"built {binary} in " in build.stdout
    assert not (dist / "llmmon" / "_internal" / "PySide6" / "Qt" / "translations").exists()  # trimmed

    db = tmp_path / "built.db"
    with x_desktop() as desk:  # the xcb platform plugin, as on a user's desktop
        smoke = subprocess.run([str(binary), "--smoke", "--db", str(db)], cwd=tmp_path, env=desk.env,
                               capture_output=True, text=True, timeout=120)
    assert smoke.returncode == 0, smoke.stderr
    assert "llmmon: window shown" in smoke.stdout
    assert query(db, "SELECT count(*), count(ended) FROM sessions") == [(1, 1)]
    assert query(db, "SELECT count(*) > 0 FROM samples") == [(1,)]
    log = (Path(os.environ["XDG_STATE_HOME"]) / "llmmon" / "log" / "llmmon.log").read_text()
    assert " ERROR " not in log and "Traceback" not in log

    install = subprocess.run([str(binary), "install"], cwd=tmp_path, env={**os.environ, "QT_QPA_PLATFORM": ""},
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(entry_path(), encoding="utf-8")
    assert entry["Desktop Entry"]["Exec"] == str(binary)
