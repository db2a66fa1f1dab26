"""Writes the user's changes into ``config.toml`` without disturbing the rest of the file.

The file is the user's: it may hold comments, blank lines, keys in their own order, settings
llmmon does not know yet, and entries llmmon could not read. :func:`save_settings` changes only
what the user changed in the settings dialog, by editing the parsed document (``tomlkit`` keeps
comments and layout), and writes it atomically (:func:`app.config_write.write_atomically`, which
the window's single switches use too), so a crash or a full disk leaves the old file or the new
one, never half of each.

Changes are applied as differences (*before* → *after*) to the file as it is on disk at save
time, so a hand edit made while the dialog was open is kept unless it touched the same keys.
A value equal to the one already written is not rewritten (``30`` stays ``30``, not ``30.0``).

Servers and routes are lists of tables (``[[servers]]``, ``[[proxy.routes]]``): the caller says
which entry each new one replaces (an :class:`Edit`), so an edited entry keeps its comments
and its place, a removed one goes, and a new one is added at the end.

>>> from app.config import Settings, ServerEntry
>>> text = '[general]\\nretention_days = 30   # a month\\n'
>>> after = Settings(retention_days=7, servers=[ServerEntry("http://gpu-box:8000", name="box")])
>>> print(edited_text(text, Settings(), after, servers=[Edit(None, after.servers[0])]))
[general]
retention_days = 7   # a month
<BLANKLINE>
[[servers]]
url = "http://gpu-box:8000"
name = "box"
<BLANKLINE>
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import AoT, Comment, InlineTable, Table, Whitespace

from app.config import ProxyRoute, ProxySettings, ServerEntry, Settings
from app.config_write import ConfigWriteError, write_atomically

log = logging.getLogger(__name__)

__all__ = ["Edit", "edits_by_position", "edited_text", "save_settings"]

T = TypeVar("T", ServerEntry, ProxyRoute)

# Settings field → [general] key (the same name); the order new keys are written in.
GENERAL_KEYS = ("retention_days", "retention_gb", "system_interval_s", "server_interval_s", "discover_local",
                "theme")
PROXY_KEYS = ("enabled", "include_usage", "store_content", "content_max_chars")
# A limit of None ("no limit") as written in the file: "never" reads better for an age.
NO_LIMIT: dict[str, object] = {"retention_days": "never", "retention_gb": 0}


@dataclass(frozen=True)
class Edit(Generic[T]):
    """One entry of a list of tables after the dialog: ``before`` is the entry it was loaded as
    (``None`` for a new one), ``after`` what it is now. Entries loaded but not named as any
    ``before`` are removed."""

    before: T | None
    after: T


def edits_by_position(before: Sequence[T], after: Sequence[T]) -> list[Edit[T]]:
    """Pairs ``after[i]`` with ``before[i]`` (extra ones are new, missing ones removed): for a
    list edited in place, without insertions or removals in the middle."""
    return [Edit(before[i] if i < len(before) else None, entry) for i, entry in enumerate(after)]


# ---------------------------------------------------------------------------- values
def _toml_value(key: str, value: object) -> object:
    """A setting as it is written: whole floats as integers, ``None`` limits as no limit."""
    if value is None:
        return NO_LIMIT[key]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _same(written: object, value: object, key: str) -> bool:
    """Whether the file already says ``value`` (``30`` says ``30.0``; ``0`` and ``"never"`` say
    no limit)."""
    if value is None:
        return written in (0, "never") and not isinstance(written, bool)
    if isinstance(written, bool) or isinstance(value, bool):
        return written is value
    if isinstance(written, (int, float)) and isinstance(value, (int, float)):
        return float(written) == float(value)
    return bool(written == value)


def _unwrapped(item: object) -> object:
    unwrap = getattr(item, "unwrap", None)
    return unwrap() if callable(unwrap) else item


def _set(table: Table | InlineTable | Container, key: str, value: object, default: object) -> None:
    """Write ``key = value`` in place (its comment stays), unless the file already says so. A
    key that is absent and whose value is the default stays absent."""
    if key in table:
        if not _same(_unwrapped(table[key]), value, key):
            table[key] = _toml_value(key, value)
    elif value != default:
        table[key] = _toml_value(key, value)


def _table(doc: Container, name: str) -> Table | InlineTable:
    """``doc[name]`` as a table (``{...}`` too), created at the end of the file when missing."""
    if name not in doc:
        doc.add(name, tomlkit.table())
    found = doc[name]
    if not isinstance(found, (Table, InlineTable)):
        raise ConfigWriteError(f"[{name}] is not a table in the file ({name} = …): fix it by hand, then save again")
    return found


def _tables(parent: Table | InlineTable | Container, name: str, where: str) -> tuple[AoT, bool]:
    """``parent[name]`` as an array of tables, created when missing; and whether its first new
    table needs a blank line above it (it follows other lines)."""
    separate = False
    if isinstance(parent, InlineTable):
        raise ConfigWriteError(f"{where} cannot go inside a table written inline ({{...}}): write that table "
                              "with its own header by hand, then save again")
    if name not in parent:
        separate = bool(parent.as_string().strip()) if isinstance(parent, Container) else bool(len(parent))
        parent.append(name, tomlkit.aot())
    found = parent[name]
    if not isinstance(found, AoT):
        raise ConfigWriteError(f"{where.strip('[]')} is not written as {where} tables in the file: write it so "
                              "by hand, then save again")
    return found, separate


# ---------------------------------------------------------------------------- entries
def _server_items(entry: ServerEntry) -> dict[str, object]:
    return {"url": entry.url, "kind": entry.kind, "name": entry.name, "api_key_ref": entry.api_key_ref}


def _route_items(route: ProxyRoute) -> dict[str, object]:
    listen: object = route.listen_port if route.listen_host == "127.0.0.1" else \
        f"{route.listen_host}:{route.listen_port}" if ":" not in route.listen_host else \
        f"[{route.listen_host}]:{route.listen_port}"
    return {"upstream": route.upstream, "listen": listen, "kind": route.kind, "name": route.name,
            "enabled": route.enabled}


_SERVER_DEFAULTS = _server_items(ServerEntry(""))
_ROUTE_DEFAULTS = _route_items(ProxyRoute("", 0))
_REQUIRED = {"url", "upstream", "listen"}  # written even when empty


def _matches(table: Table, before: dict[str, object]) -> bool:
    """Whether this table is the entry that was loaded as ``before`` (its identifying keys)."""
    key = "url" if "url" in before else "upstream"
    written = _unwrapped(table.get(key))
    return isinstance(written, str) and written.rstrip("/") == before[key]


def _new_table(items: dict[str, object], defaults: dict[str, object]) -> Table:
    table = tomlkit.table()
    for key, value in items.items():
        if key in _REQUIRED or value != defaults[key]:
            table[key] = value
    return table


def _trailing(table: Table) -> list[tuple[None, Comment | Whitespace]]:
    """The comment and blank lines at the end of a table (tomlkit files the lines above a
    header under the table before it, but they belong to what follows)."""
    body = table.value.body
    start = len(body)
    while start > 0 and body[start - 1][0] is None and isinstance(body[start - 1][1], (Comment, Whitespace)):
        start -= 1
    return body[start:]  # type: ignore[return-value]


def _keep_trailing_comments(tables: AoT, index: int, gone: set[int]) -> None:
    """Before table ``index`` is removed: its trailing comment lines go to the table before it,
    or else in front of the next one."""
    trailing = _trailing(tables.body[index])
    if not any(isinstance(item, Comment) for _, item in trailing):
        return
    before = [i for i in range(index) if i not in gone]
    after = [i for i in range(index + 1, len(tables.body)) if i not in gone]
    if before:
        tables.body[before[-1]].value.body.extend(trailing)
    elif after:
        header = tables.body[after[0]].trivia
        header.indent = "".join(item.as_string() for _, item in trailing) + header.indent


def _append(tables: AoT, table: Table, separate: bool) -> None:
    """Add ``table`` at the end of the array, after a blank line; the lines that ended the
    array (before whatever follows it) move below it."""
    if tables.body:
        last = tables.body[-1].value.body
        trailing = _trailing(tables.body[-1])
        del last[len(last) - len(trailing):]
        table.value.body.extend(trailing)
        separate = True
    if separate:
        table.trivia.indent = "\n"
    tables.append(table)


def _edit_entries(tables: AoT, separate: bool, edits: Sequence[Edit[T]], loaded: Sequence[T],
                  items: Callable[[T], dict[str, object]], defaults: dict[str, object]) -> None:
    """Apply ``edits`` to the array of tables: update in place, remove, then append the new.

    Entries are the objects of ``loaded`` (compared by identity: two equal entries are still
    two tables); a table is found by its URL (``url`` or ``upstream``)."""
    taken: set[int] = set()

    def find(entry: T) -> int | None:
        wanted = items(entry)
        index = next((i for i, t in enumerate(tables.body) if i not in taken and _matches(t, wanted)), None)
        if index is not None:
            taken.add(index)
        return index

    updates: dict[int, Edit[T]] = {}
    new: list[Edit[T]] = []
    for edit in edits:
        index = find(edit.before) if edit.before is not None else None
        if index is None:
            new.append(edit)  # also an entry whose table went from the file since it was read
        else:
            updates[index] = edit
    kept = {id(edit.before) for edit in edits}
    gone = {i for entry in loaded if id(entry) not in kept and (i := find(entry)) is not None}
    for index, edit in updates.items():
        table = tables.body[index]
        for key, value in items(edit.after).items():
            if key == "api_key_ref" and not value and key in table:
                del table[key]  # an empty keyring reference means none
            else:
                _set(table, key, value, defaults[key])
    for index in sorted(gone, reverse=True):
        _keep_trailing_comments(tables, index, gone)
        del tables[index]
    for edit in new:
        _append(tables, _new_table(items(edit.after), defaults), separate)


# ---------------------------------------------------------------------------- the document
def _apply(doc: tomlkit.TOMLDocument, before: Settings, after: Settings,
           servers: Sequence[Edit[ServerEntry]] | None, routes: Sequence[Edit[ProxyRoute]] | None) -> None:
    defaults = Settings()
    changed = [k for k in GENERAL_KEYS if getattr(before, k) != getattr(after, k)]
    if changed:
        had_general = "general" in doc
        general = _table(doc, "general")
        for key in changed:
            _set(general, key, getattr(after, key), getattr(defaults, key))
        _drop_if_new_and_empty(doc, "general", had_general)
    if servers is not None:
        _edit_entries(*_tables(doc, "servers", "[[servers]]"), servers, before.servers, _server_items,
                      _SERVER_DEFAULTS)
        if "servers" in doc and not doc["servers"]:
            del doc["servers"]
    proxy_defaults = ProxySettings()
    changed = [k for k in PROXY_KEYS if getattr(before.proxy, k) != getattr(after.proxy, k)]
    if changed or routes is not None:
        had_proxy = "proxy" in doc
        proxy = _table(doc, "proxy")
        for key in changed:
            _set(proxy, key, getattr(after.proxy, key), getattr(proxy_defaults, key))
        if routes is not None:
            _edit_entries(*_tables(proxy, "routes", "[[proxy.routes]]"), routes, before.proxy.routes,
                          _route_items, _ROUTE_DEFAULTS)
            if not proxy["routes"]:
                del proxy["routes"]
        _drop_if_new_and_empty(doc, "proxy", had_proxy)  # the dialog always passes its (maybe no) routes


def _drop_if_new_and_empty(doc: tomlkit.TOMLDocument, name: str, existed: bool) -> None:
    """A table this save created and then wrote nothing into goes again: no empty ``[name]``
    in the file (one the user wrote stays, empty or not)."""
    if not existed and not doc[name]:
        del doc[name]


def edited_text(text: str, before: Settings, after: Settings, *,
                servers: Sequence[Edit[ServerEntry]] | None = None,
                routes: Sequence[Edit[ProxyRoute]] | None = None) -> str:
    """``text`` (a config file) with the changes from ``before`` to ``after``.

    ``servers`` / ``routes``: how the lists were edited (``None``: unchanged). Raises
    :class:`ConfigWriteError` when ``text`` is not TOML or has a table where a value should be.
    """
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigWriteError(f"the file is not valid TOML ({exc}): fix it by hand, then save again") from None
    _apply(doc, before, after, servers, routes)
    return doc.as_string()


def save_settings(path: Path, before: Settings, after: Settings, *,
                  servers: Sequence[Edit[ServerEntry]] | None = None,
                  routes: Sequence[Edit[ProxyRoute]] | None = None) -> str:
    """Write the changes from ``before`` to ``after`` into the file at ``path`` as it is now
    (created when missing); returns the new text. Raises :class:`ConfigWriteError` (nothing
    written, the message says why) when the file cannot be read, edited or written."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigWriteError(f"cannot read {path} ({exc})") from None
    new = edited_text(text, before, after, servers=servers, routes=routes)
    if new != text:
        write_atomically(path, new)
        log.info("settings saved to %s", path)
    return new
