"""Where a key is written in a TOML text, so a message about a bad setting can name its line.

``tomllib`` gives the values but no positions. This reads the text line by line the way a
person would: table headers (``[proxy]``, ``[[servers]]`` counted per array), ``key = value``
lines and dotted keys, skipping the inside of multi-line strings. It does not validate
anything (``tomllib`` does); for a key it cannot find it answers with the nearest enclosing
key or table it can (``general = 5`` for ``general.retention_days``).

>>> text = '[general]\\nretention_days = 5\\n\\n[[servers]]\\nurl = "a"\\n[[servers]]\\nurl = "b"\\n'
>>> key_line(text, ("general", "retention_days")), key_line(text, ("servers", 1, "url"))
(2, 7)
>>> key_line(text, ("servers", 1, "name"))   # not written: the table it belongs in
6
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence

Key = tuple[str | int, ...]
"""A key as tomllib's nesting sees it: names, and indexes into arrays of tables."""

_KEY_PART = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*""")
_ARRAY_HEADER = re.compile(r"^\s*\[\[(.*)\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[([^\[].*?)\]\s*(#.*)?$")


def _unquoted(part: str) -> str:
    if part[0] == "'":
        return part[1:-1]
    if part[0] == '"':
        try:  # TOML's own escapes (\\", \\u00e9, ...): let tomllib undo them
            return str(tomllib.loads(f"k = {part}")["k"])
        except tomllib.TOMLDecodeError:
            return part[1:-1]
    return part


def _read_key(text: str) -> tuple[tuple[str, ...], str]:
    """The dotted key at the start of ``text`` (``a."b.c".d`` → ``("a", "b.c", "d")``) and the
    text after it; ``()`` when there is none."""
    parts: list[str] = []
    pos = 0
    while m := _KEY_PART.match(text, pos):
        parts.append(_unquoted(m.group(1)))
        pos = m.end()
        if not text.startswith(".", pos):
            return tuple(parts), text[pos:]
        pos += 1
    return (), text


def key_lines(text: str) -> list[tuple[Key, int]]:
    """Every table header and key in ``text`` as ``(path, 1-based line)``, in file order."""
    out: list[tuple[Key, int]] = []
    arrays: dict[tuple[str, ...], int] = {}  # array-of-tables path (names) -> its current index
    current: Key = ()
    in_string = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = ""
            continue
        header = _ARRAY_HEADER.match(line) or _TABLE_HEADER.match(line)
        if header is not None:
            names, rest = _read_key(header.group(1))
            if not names or rest:
                continue
            resolved: list[str | int] = []
            for i, name in enumerate(names):
                resolved.append(name)
                # A sub-table of an array element belongs to that array's latest element.
                if i < len(names) - 1 and names[:i + 1] in arrays:
                    resolved.append(arrays[names[:i + 1]])
            if line.lstrip().startswith("[["):
                arrays[names] = arrays.get(names, -1) + 1
                resolved.append(arrays[names])
            current = tuple(resolved)
            out.append((current, number))
            continue
        key, rest = _read_key(line)
        if key and rest.startswith("="):
            out.append(((*current, *key), number))
            value = rest[1:]
            for quote in ('"""', "'''"):
                if value.count(quote) % 2:
                    in_string = quote
                    break
    return out


def key_line(text: str | Sequence[tuple[Key, int]], path: Key) -> int | None:
    """The line where ``path`` is written; else the first line inside it (a table only written
    through its sub-tables); else that of its nearest written parent; ``None`` when not even
    the first part is written. ``text`` may be :func:`key_lines`' result."""
    lines = key_lines(text) if isinstance(text, str) else text
    best, best_len = None, 0
    inside = None  # the first key written inside it (``[a.b]`` for ``a`` when ``[a]`` is not written)
    for written, number in lines:
        n = len(written)
        if n > len(path):
            if inside is None and written[:len(path)] == tuple(path):
                inside = number
            continue
        if tuple(path[:n]) != written:
            continue
        if n == len(path):
            return number
        if n > best_len:
            best, best_len = number, n
    return inside if inside is not None else best
