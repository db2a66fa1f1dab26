"""The files llmmon ships with its code: the default alert rules (``alert_rules.toml``, copied
to the user's config dir on first run) and the icon (``llmmon.svg``).

They are package data, found through :mod:`importlib.resources` rather than paths relative to
some module's ``__file__``, so the same call works from a source checkout, an installed wheel
(``pyproject.toml`` lists them as package data) and the PyInstaller bundle (``llmmon.spec``
collects this directory).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
from importlib.resources import as_file, files
from pathlib import Path

ALERT_RULES = "alert_rules.toml"
ICON = "llmmon.svg"

_extracted = contextlib.ExitStack()  # files a loader had to copy out (a zip) live until exit
atexit.register(_extracted.close)


@functools.cache
def resource_path(name: str) -> Path:
    """A shipped file as a path on disk (Qt and the rule loader want paths). Installed as plain
    files, this is where the file is; from a zip, a temporary copy kept until the process ends.

    >>> resource_path(ICON).name
    'llmmon.svg'
    """
    return _extracted.enter_context(as_file(files(__name__) / name))
