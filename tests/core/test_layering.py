"""The layering docs/architecture.md promises, checked on the code: the core (app/, collectors/)
never imports Qt — it runs headless, in the proxy CLI and in scripts/check's doctests, none of
which may need Qt's system libraries; in app/ only the runtime names concrete collectors;
widgets take their colours from the theme and run no SQL of their own; the real-server tier can
be left out with ``-m "not real_server"``. A wrong import or a copied colour would still run, so
nothing else would notice: these tests do."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def offending(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports_of(path) if m.split(".")[0] in prefixes)


@pytest.mark.parametrize("path", [p for p in modules("app") if p.name != "runtime.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_runtime_names_concrete_collectors(path: Path) -> None:
    assert offending(path, ("collectors",)) == []


def test_the_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from collectors.gpu import GpuCollector\n", encoding="utf-8")
    assert offending(sample, ("collectors",)) == ["collectors.gpu"]


@pytest.mark.parametrize("path", [p for p in modules("widgets") if p.name != "theme.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_widgets_take_their_colours_from_the_theme(path: Path) -> None:
    """A hard-coded colour would not follow the palette (nor a change of it)."""
    assert re.findall(r"#[0-9A-Fa-f]{6}\b", path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", modules("widgets"), ids=lambda p: str(p.relative_to(ROOT)))
def test_widgets_run_no_sql_of_their_own(path: Path) -> None:
    """Queries live with the data's owner (app/storage/queries.py...), where core tests reach them."""
    assert re.findall(r"\.execute(?:many)?\(|\bSELECT\b|\bINSERT\b", path.read_text(encoding="utf-8")) == []


def test_the_real_server_tier_can_be_left_out() -> None:
    """``-m "not real_server"`` deselects every test of the tiers that start real servers (and
    only those)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", "not real_server", "tests/real_server", "tests/prometheus",
                          "tests/core/test_durations.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    listed = [line for line in run.stdout.splitlines() if "::" in line]
    assert listed and all(line.startswith("tests/core/test_durations.py::") for line in listed), run.stdout
    assert re.search(r"\(([1-9]\d*) deselected\)", run.stdout), run.stdout
