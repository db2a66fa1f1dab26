"""Logging to a rotating file in the user's log dir (and to stderr for warnings and worse).

The file keeps what a user or a bug report needs: state changes (a server up or down, a
session started, an alert firing) at INFO, problems at WARNING and above. The HTTP libraries'
per-request lines are not in it: httpx logs every request at INFO ("HTTP Request: GET ...
200 OK"), which with collectors polling each second was 97 % of the file and pushed a day's
state changes out of the rotation within hours. Their warnings and errors still come through.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from app.config import log_dir

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
MAX_BYTES, BACKUPS = 5_000_000, 3
QUIET_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "urllib3")
"""Libraries that log every request or connection at INFO/DEBUG: kept to WARNING and above."""


def setup_logging(directory: Path | None = None, level: int = logging.INFO) -> Path | None:
    """Configure the root logger once; returns the log file path (None if it can't be written)."""
    root = logging.getLogger()
    if getattr(root, "_llmmon_configured", False):
        return getattr(root, "_llmmon_log_file", None)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("llmmon: %(levelname)s %(message)s"))
    root.addHandler(console)
    file = (directory or log_dir()) / "llmmon.log"
    path: Path | None = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        path = file
    except OSError as exc:
        root.warning("cannot write the log file %s: %s", file, exc)
    root._llmmon_configured = True  # type: ignore[attr-defined]
    root._llmmon_log_file = path  # type: ignore[attr-defined]
    return path
