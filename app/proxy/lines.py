"""Cutting a byte stream into lines for the meter, in time linear in the bytes and with a cap
on what one unfinished line may hold.

A server that sends one endless line (a 100 MB NDJSON object, or garbage without a newline)
must cost the meter no more than the bytes themselves: each piece of input is scanned once,
never the accumulated line again, and past ``cap`` bytes the line is given up (the meter does
not parse it; the bytes themselves pass through the proxy unchanged, they are not held here).

>>> lines = LineSplitter(cap=8)
>>> lines.feed(b'{"a":1}\\n{"b"'), lines.feed(b':2}\\n'), lines.feed(b'0123456789\\nok\\n')
([b'{"a":1}'], [b'{"b":2}'], [None, b'ok'])
"""
from __future__ import annotations


class LineSplitter:
    """Splits on ``\\n``. :meth:`feed` returns the lines completed by a piece of input, without
    their newline; a line longer than ``cap`` comes out as ``None`` (so a reader of SSE events
    knows that one line of the event is missing) and is counted in :attr:`dropped`."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.dropped = 0
        self._part = bytearray()   # the unfinished line so far (at most cap bytes)
        self._over = False          # the unfinished line passed the cap: skip to its end

    def feed(self, data: bytes) -> list[bytes | None]:
        parts = data.split(b"\n")  # the new bytes only, never the kept part
        rest = parts.pop()
        lines: list[bytes | None] = list(parts)
        cap = self.cap
        if parts and (self._part or self._over):  # the first line ends the one kept so far
            head = parts[0]
            if self._over or len(self._part) + len(head) > cap:
                self.dropped += not self._over
                lines[0] = None
            else:
                lines[0] = bytes(self._part) + head
            self._part, self._over = bytearray(), False
        if len(data) > cap:  # (else no line of it can be over the cap)
            for i, line in enumerate(lines):
                if line is not None and len(line) > cap:
                    self.dropped += 1
                    lines[i] = None
        if rest and not self._over:
            if len(self._part) + len(rest) > cap:
                self.dropped += 1
                self._over = True
                self._part = bytearray()
            else:
                self._part += rest
        return lines

    def rest(self) -> bytes | None:
        """At the end of the stream: the last line if it had no newline (``b""`` when there is
        none, ``None`` when it was over the cap)."""
        if self._over:
            self._over = False
            return None
        part, self._part = bytes(self._part), bytearray()
        return part
