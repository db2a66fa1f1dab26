"""The shipped files (default alert rules, icon) are package data: found through
importlib.resources wherever the package is loaded from, and listed for the wheel."""
from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from app.alerts.rules import DEFAULT_RULES_PATH, load_rules
from app.resources import ALERT_RULES, ICON, resource_path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "app" / "resources"


def shipped_files() -> list[Path]:
    return sorted(p for p in PACKAGE.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))


def test_the_defaults_are_read_from_the_package() -> None:
    assert DEFAULT_RULES_PATH == resource_path(ALERT_RULES) == PACKAGE / ALERT_RULES
    assert load_rules(DEFAULT_RULES_PATH).problems == []
    assert resource_path(ICON).read_bytes().lstrip().startswith(b"<svg")


def test_every_shipped_file_is_package_data_of_the_wheel() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    listed = patterns["app.resources"]
    assert {ALERT_RULES, ICON} <= {p.name for p in shipped_files()}
    assert [p.name for p in shipped_files() if not any(fnmatch.fnmatch(p.name, g) for g in listed)] == []


def test_found_when_the_package_is_imported_from_a_zip(tmp_path: Path) -> None:
    """No path relative to ``__file__``: a zipped package (zipimport) still finds its files."""
    archive = tmp_path / "llmmon.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(ROOT / "app" / "__init__.py", "app/__init__.py")
        z.write(PACKAGE / "__init__.py", "app/resources/__init__.py")
        for path in shipped_files():
            z.write(path, f"app/resources/{path.name}")
    code = ("import sys; from app.resources import ALERT_RULES, resource_path; import app; "
            "sys.stdout.write(app.__file__ + '\\n' + resource_path(ALERT_RULES).read_text(encoding='utf-8'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(archive), "PATH": ""}, check=True).stdout
    where, text = out.split("\n", 1)
    assert where.startswith(str(archive))  # really the zipped copy, not this checkout
    assert text == (PACKAGE / ALERT_RULES).read_text(encoding="utf-8")
