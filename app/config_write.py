"""Writing one setting back into config.toml, for a switch the user flips in the window (the
Requests tab's proxy switch is ``[proxy] enabled``) so that the next start keeps it.

tomlkit edits the document in place: comments, order and spacing stay as the user wrote them,
only the one value changes (or is added). The file is replaced atomically (written beside it,
then renamed), so a crash leaves the old file or the new one, never half of one. A file that is
not valid TOML is left alone and the caller is told why.

>>> import tempfile
>>> folder = tempfile.TemporaryDirectory(); path = Path(folder.name) / "config.toml"
>>> _ = path.write_text("[proxy]\\nenabled = false  # off for now\\n", encoding="utf-8")
>>> save_setting(path, "proxy", "enabled", True)
>>> path.read_text(encoding="utf-8")
'[proxy]\\nenabled = true  # off for now\\n'
>>> folder.cleanup()
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable, Table

log = logging.getLogger(__name__)


class ConfigWriteError(Exception):
    """The setting could not be saved; ``str()`` says why, for the user. The file is unchanged."""


def save_setting(path: Path, table: str, key: str, value: bool | int | float | str) -> None:
    """Set ``[table] key = value`` in the TOML file ``path`` (created, with its folder, when
    missing). Raises :class:`ConfigWriteError` when the file cannot be read as TOML or written."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigWriteError(f"cannot read {path} ({exc})") from None
    except TOMLKitError as exc:
        raise ConfigWriteError(f"{path} is not valid TOML ({exc}); it was left as it is") from None
    section = doc.get(table)
    if section is None:
        section = doc[table] = tomlkit.table()
    if not isinstance(section, (Table, InlineTable)):
        raise ConfigWriteError(f"{path}: {table} is not a table ([{table}]); it was left as it is")
    section[key] = value
    write_atomically(path, tomlkit.dumps(doc))
    log.info("saved %s.%s = %r in %s", table, key, value, path)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same folder, flushed to disk,
    renamed over the old one (whose permissions it keeps), and the folder flushed so the
    rename survives a power cut. Raises :class:`ConfigWriteError`; the old file is untouched."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigWriteError(f"cannot write {path} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the file's permissions (mkstemp makes it owner-only)
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigWriteError(f"cannot write {path} ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):  # not possible everywhere (Windows): the rename is atomic anyway
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
