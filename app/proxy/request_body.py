"""What the proxy reads from a request body before forwarding it, and the one change it may
make (the user's opt-in to ``stream_options.include_usage``).

The body is forwarded unchanged unless that opt-in is on *and* it is an OpenAI-style streaming
request that did not ask for usage; then ``"stream_options": {"include_usage": true}`` is
added and :class:`UsageStripper` removes the extra usage chunk from the answer, so the client
sees the stream it asked for while the meter gets the server's exact counts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.proxy.meter import loads

# Paths of inference calls: these get a RequestRecord. Everything else (model lists, pulls,
# health checks...) is forwarded the same way but not recorded, so a client polling
# /api/tags does not flood the requests table.
METERED_SUFFIXES = (
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/completion", "/completions", "/chat/completions", "/embedding", "/embeddings",
)
USAGE_PATHS = ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions")


def is_metered(path: str) -> bool:
    return path.rstrip("/").endswith(METERED_SUFFIXES)


@dataclass(slots=True)
class BodyInfo:
    """What the request asked for, as far as the meter cares."""

    body: bytes
    model: str = ""
    stream: bool | None = None
    prompt_text: str | None = None
    usage_added: bool = False     # the proxy added include_usage: strip the usage chunk


def inspect_body(body: bytes, path: str, *, add_usage: bool = False, keep_text: int = 0) -> BodyInfo:
    """Read model, stream flag and (if ``keep_text``) the prompt from a JSON request body.

    A body that is not a JSON object (or one nested too deep to parse) is forwarded untouched
    with nothing read from it: the server answers it as it sees fit, and that is recorded.
    """
    info = BodyInfo(body)
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return info
    obj = loads(body)
    if not isinstance(obj, dict):
        return info
    if isinstance(obj.get("model"), str):
        info.model = obj["model"]
    if isinstance(obj.get("stream"), bool):
        info.stream = obj["stream"]
    if keep_text:
        text = prompt_text(obj)
        info.prompt_text = text[:keep_text] if text else None
    if add_usage and info.stream and path.rstrip("/").endswith(USAGE_PATHS):
        options = obj.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            obj["stream_options"] = options
            try:
                info.body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                info.usage_added = True
            except (ValueError, RecursionError):  # parsed, but too deep to write back: as sent
                pass
    return info


def prompt_text(obj: dict[str, Any]) -> str:
    """The prompt of a chat, generate or completion request as plain text."""
    parts: list[str] = []
    for key in ("system", "prompt", "input"):
        value = obj.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, str))
    messages = obj.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts: keep the text ones
                content = " ".join(p.get("text", "") for p in content
                                   if isinstance(p, dict) and isinstance(p.get("text"), str))
            if isinstance(content, str):
                parts.append(f"{message.get('role', '')}: {content}")
    return "\n".join(parts)


class UsageStripper:
    """Removes, from an SSE byte stream, the usage-only chunk (``"choices": []`` with a
    ``usage``) that the proxy itself asked for. Everything else passes byte for byte; bytes
    are held back only until the end of the event they belong to, and an event that grows past
    :data:`USAGE_EVENT_CAP` (no usage chunk is that big) passes on at once. Each byte is looked
    at once, so one endless event costs no more than its bytes.

    >>> s = UsageStripper()
    >>> s.feed(b'data: {"choices":[{"delta":{}}]}\\n\\ndata: {"choices":[],"usage":{}}\\n'), s.feed(b'\\n'), s.flush()
    (b'data: {"choices":[{"delta":{}}]}\\n\\n', b'', b'')
    """

    def __init__(self) -> None:
        self._pending = bytearray()   # the unfinished event, held back
        self._passing = False         # the unfinished event is too big to be usage: it flows
        self._newline = False         # the last byte seen ended a line (an event may end next)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        start = 0
        while start < len(data):
            end = self._event_end(data, start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._passing:
                out += piece
            else:
                self._pending += piece
                if end >= 0:
                    if not _is_usage_only(self._pending):
                        out += self._pending
                    self._pending = bytearray()
                elif len(self._pending) > USAGE_EVENT_CAP:
                    out += self._pending
                    self._pending = bytearray()
                    self._passing = True
            if end < 0:
                self._newline = data.endswith(b"\n")
                break
            self._passing = self._newline = False
            start = end
        return bytes(out)

    def _event_end(self, data: bytes, start: int) -> int:
        """Where the event that ``data[start:]`` continues ends (after its ``\\n\\n``), or -1."""
        if self._newline and data.startswith(b"\n", start):
            return start + 1
        end = data.find(b"\n\n", start)
        return -1 if end < 0 else end + 2

    def flush(self) -> bytes:
        rest, self._pending = bytes(self._pending), bytearray()
        return b"" if _is_usage_only(rest) else rest


USAGE_EVENT_CAP = 64 * 1024


def _is_usage_only(event: bytes | bytearray) -> bool:
    if b"usage" not in event:
        return False
    obj = loads(b"".join(line[5:].strip() for line in bytes(event).splitlines() if line.startswith(b"data:")))
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
