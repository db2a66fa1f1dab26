"""Logging to a rotating file in the user's log dir (and to stderr for warnings and worse)."""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from app.config import log_dir

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def setup_logging(directory: Path | None = None, level: int = logging.INFO) -> Path | None:
    """Configure the root logger once; returns the log file path (None if it can't be written)."""
    root = logging.getLogger()
    if getattr(root, "_llmmon_configured", False):
        return getattr(root, "_llmmon_log_file", None)
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("llmmon: %(levelname)s %(message)s"))
    root.addHandler(console)
    file = (directory or log_dir()) / "llmmon.log"
    path: Path | None = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=5_000_000, backupCount=3,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        path = file
    except OSError as exc:
        root.warning("cannot write the log file %s: %s", file, exc)
    root._llmmon_configured = True  # type: ignore[attr-defined]
    root._llmmon_log_file = path  # type: ignore[attr-defined]
    return path
