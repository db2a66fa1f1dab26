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

    A body that is not a JSON object is forwarded untouched with nothing read from it.
    """
    info = BodyInfo(body)
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return info
    try:
        obj = json.loads(body)
    except ValueError:
        return info
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
            info.body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            info.usage_added = True
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
    are held back only until the end of the event they belong to."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:  # (a CRLF-framed stream is held to the end: no LLM server sends one)
            self._pending = buf
            return b""
        complete, self._pending = buf[:cut + 2], buf[cut + 2:]
        events = complete.split(b"\n\n")[:-1]
        return b"".join(e + b"\n\n" for e in events if not _is_usage_only(e))

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return b"" if _is_usage_only(rest) else rest


def _is_usage_only(event: bytes) -> bool:
    if b"usage" not in event:
        return False
    data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
