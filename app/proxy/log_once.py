"""Logging a fault of the proxy once per kind.

The proxy and the meter catch every exception of one request or one chunk so that the others
go on; a fault that repeats on every chunk of every request must not flood the log either.
The first of each kind is logged (with its traceback when asked), later ones only at debug
level. Kinds are few (a place and an exception type); past ``MAX_KINDS`` all go to debug.
"""
from __future__ import annotations

import logging
import threading

MAX_KINDS = 256

_lock = threading.Lock()
_seen: set[str] = set()


def log_once(logger: logging.Logger, kind: str, message: str, *args: object,
             level: int = logging.ERROR, exc_info: bool = False) -> bool:
    """Log ``message % args`` if no fault of this ``kind`` was logged before; returns whether
    it was (the later ones go to debug)."""
    with _lock:
        first = kind not in _seen and len(_seen) < MAX_KINDS
        if first:
            _seen.add(kind)
    logger.log(level if first else logging.DEBUG, message, *args, exc_info=exc_info and first)
    return first
