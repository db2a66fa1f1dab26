"""Run code in another local time zone (``TZ`` + ``time.tzset()``), restored afterwards."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_time_zone(name: str) -> Iterator[None]:
    """E.g. ``"Asia/Kathmandu"`` (UTC+05:45, no daylight saving) or ``"America/New_York"``."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
