"""The core (app/, collectors/) never imports Qt: it runs headless, in the proxy CLI and in
scripts/check's doctests, none of which may need Qt's system libraries."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: this one may already hold Qt from other tests.
IMPORT_ALL = """
import importlib, pkgutil, sys
import app, collectors
for package in (app, collectors):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(len([m for m in sys.modules if m.startswith(("app.", "collectors."))]))
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"PySide6", "shiboken6", "pyqtgraph"})))
"""


def test_no_core_module_imports_qt() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    imported, qt = result.stdout.splitlines()
    assert int(imported) > 30  # every module of both packages was imported
    assert qt == "", f"the core imports {qt}"
