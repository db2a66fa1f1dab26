"""The meter: reads a response's bytes as they pass and fills in a :class:`RequestRecord`.

It understands the three shapes LLM servers answer with, chosen from the response's
``Content-Type``:

* ``application/x-ndjson`` — Ollama's streams: one JSON object per line, the last one
  (``"done": true``) carrying ``eval_count``, ``prompt_eval_count`` and nanosecond durations;
* ``text/event-stream`` — OpenAI-compatible streams (vLLM, llama.cpp, LM Studio...):
  ``data: {json}`` events ending with ``data: [DONE]``; ``usage`` arrives in a last chunk
  when the client asked for ``stream_options.include_usage``; llama.cpp's ``llama-server``
  adds a ``timings`` object (``predicted_n``, ``predicted_per_second``, ``prompt_n``...);
* anything else — one JSON body (non-streaming answers and HTTP errors), parsed at the end.

Every JSON object goes through :meth:`Meter.observe`, which knows Ollama's, OpenAI's and
llama.cpp's fields, so a server that mixes them (Ollama's ``/v1`` routes) is read right.
Token counts are what the server reported. When it reported none, the completion count is
the number of chunks that carried content and ``tokens_estimated`` is set — never a guess
from the text length.

Timings use the caller's clock (``time.perf_counter()`` in the proxy) and are relative to
``t0``, the moment the request arrived. TTFT is the arrival of the first chunk that carries
content (text, reasoning or a tool call); inter-token latency is the gap between successive
content chunks as they passed the proxy; the client-observed decode rate covers the tokens
after the first one: ``(completion_tokens - 1) / (t_last - t_first)``.

Figures are exact or absent: a number the server reported that is not a plausible count,
duration or speed (NaN, infinite, negative, 1e400, 1e-320...) is ignored as if not reported.
The meter never raises: a fault in one chunk is logged once per kind and the chunk skipped.
Past :data:`LINE_CAP` bytes a line (or SSE event) is not parsed, and past :data:`BODY_CAP` a
body is not parsed; the bytes themselves pass through the proxy unchanged.

>>> rec = RequestRecord(ts_start=0.0, server="ollama@127.0.0.1:11434", endpoint="/api/generate")
>>> m = Meter(rec, t0=0.0, content_type="application/x-ndjson")
>>> m.feed(b'{"response":"Hi","done":false}\\n', 0.25)
>>> m.feed(b'{"response":"","done":true,"eval_count":1,"eval_duration":5000000}\\n', 0.5)
>>> _ = m.finish(0.5)
>>> (rec.ttft_s, rec.completion_tokens, rec.server_tokens_per_s)
(0.25, 1, 200.0)
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from app.proxy.lines import LineSplitter
from app.proxy.log_once import log_once
from app.records import RequestRecord

log = logging.getLogger(__name__)

NS = 1e-9
BODY_CAP = 4 * 1024 * 1024   # the most of a non-streamed body the meter keeps to parse
LINE_CAP = 4 * 1024 * 1024   # the most of one NDJSON line or SSE event it keeps to parse
INFLATE_STEP = 1024 * 1024   # compressed bodies are inflated at most this much at a time
ERROR_TEXT_CAP = 500
# Bounds of what a server may plausibly report; anything outside is a garbled number.
MAX_TOKENS = 10**9           # far more than any context window
MIN_DURATION_NS = 1.0        # Ollama reports whole nanoseconds
MAX_DURATION_NS = 1e18       # ~32 years
MAX_RATE = 1e12              # tokens per second


def framing_of(content_type: str) -> str:
    """``"ndjson"``, ``"sse"`` or ``"json"`` (one body) for a response ``Content-Type``."""
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"):
        return "ndjson"
    if ct == "text/event-stream":
        return "sse"
    return "json"


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that answers ``None`` for anything it cannot read: not JSON, not UTF-8,
    or nested too deep to parse (``RecursionError``: a 100k-deep ``[[[...`` is refused, not
    fatal)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def dumps(obj: Any) -> str:
    """``json.dumps`` of a parsed value, ``""`` for one nested too deep to write back."""
    try:
        return json.dumps(obj)
    except (ValueError, RecursionError, TypeError):
        return ""


def error_message(obj: Any) -> str:
    """The human text of an ``{"error": ...}`` value: Ollama's string or OpenAI's object."""
    if isinstance(obj, dict):
        inner = obj.get("message") or obj.get("type") or dumps(obj) or "error"
        return inner[:ERROR_TEXT_CAP] if isinstance(inner, str) else dumps(inner)[:ERROR_TEXT_CAP] or "error"
    return obj[:ERROR_TEXT_CAP] if isinstance(obj, str) else dumps(obj)[:ERROR_TEXT_CAP] or "error"


def _number(value: Any, low: float, high: float) -> float | None:
    """``value`` as a float if it is a JSON number within ``[low, high]`` (NaN never is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if low <= value <= high else None  # compares ints of any size safely


def _count(value: Any) -> int | None:
    """A token count: a whole number from 0 to :data:`MAX_TOKENS`."""
    n = _number(value, 0, MAX_TOKENS)
    return int(n) if n is not None and n.is_integer() else None


def _seconds(duration_ns: Any) -> float | None:
    """A reported duration in nanoseconds, in seconds: 0, or from 1 ns to :data:`MAX_DURATION_NS`."""
    d = _number(duration_ns, 0.0, MAX_DURATION_NS)
    return d * NS if d is not None and (d == 0 or d >= MIN_DURATION_NS) else None


def _speed(value: Any) -> float | None:
    """Tokens per second, above 0 (a server that reports 0.0 for a request that produced
    tokens, as llama.cpp does for one token, measured nothing) and at most :data:`MAX_RATE`."""
    return _number(value, 0.0, MAX_RATE) or None


def _rate(count: Any, duration_ns: Any) -> float | None:
    """Tokens per second from a reported count and duration in nanoseconds."""
    n, d = _count(count), _number(duration_ns, MIN_DURATION_NS, MAX_DURATION_NS)
    if n is None or d is None:
        return None
    return _speed(n / (d * NS))


class Meter:
    """Meters one response. Not thread-safe: one meter per request, fed by one task.

    Args:
        record: the record to fill in (``status``, ``stream``, counts, timings, errors).
        t0: the clock value when the request arrived.
        content_type: the response's ``Content-Type`` header, which picks the framing.
        content_encoding: the response's ``Content-Encoding``; gzip/deflate bodies are
            decompressed for the meter's own reading (the client still gets the raw bytes).
        keep_text: keep up to this many characters of the response text (the user opted in
            to storing content); 0 keeps none.
        on_text: called with each piece of response text as it is read (the prompt test
            panel shows the answer streaming in from the same bytes it measures).
    """

    def __init__(self, record: RequestRecord, t0: float, content_type: str = "",
                 content_encoding: str = "", keep_text: int = 0,
                 on_text: Callable[[str], None] | None = None) -> None:
        self.record = record
        self.t0 = t0
        self.framing = framing_of(content_type)
        record.stream = self.framing != "json"
        self.keep_text = keep_text
        self.on_text = on_text
        self._text: list[str] = []
        self._text_len = 0
        self._lines = LineSplitter(LINE_CAP)
        self._body = bytearray()
        self._body_truncated = False
        self._sse_data: list[bytes] = []
        self._sse_size = 0
        self._sse_dropped = False              # a line of this event was over the cap
        self._token_times: list[float] = []   # arrival of each chunk that carries a token
        self._token_chunks = 0
        self._first_text: float | None = None  # arrival of the first chunk with text
        self.ended = False  # the stream's own end was read: data: [DONE], or "done": true
        self._decoder: Any = None
        encoding = content_encoding.strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding and encoding != "identity":
            self.framing = "opaque"  # e.g. brotli: pass through, meter nothing but bytes
        # What the server reported (None = not reported).
        self._usage_prompt: int | None = None
        self._usage_completion: int | None = None
        self._timings: dict[str, Any] | None = None
        self._ollama_final: dict[str, Any] | None = None

    # ------------------------------------------------------------------ feeding
    def feed(self, data: bytes, now: float) -> None:
        """Read the next bytes of the body, received at clock value ``now``. Never raises."""
        self.record.bytes_out += len(data)
        if self.framing == "opaque" or self._body_truncated or not data:
            return
        try:
            if self._decoder is None:
                self._take(data, now)
            else:
                for piece in self._inflate(data):
                    self._take(piece, now)
        except Exception as exc:  # one chunk the meter cannot read must not cost the request
            self._fault("feed", exc)

    def _inflate(self, data: bytes, final: bool = False) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most :data:`INFLATE_STEP` (so a
        small compressed chunk that inflates enormously is never in memory at once)."""
        decoder = self._decoder
        if decoder is None:
            yield data
            return
        try:
            while data:
                piece = decoder.decompress(data, INFLATE_STEP)
                data = decoder.unconsumed_tail
                if piece:
                    yield piece
            if final:
                yield decoder.flush()
        except zlib.error:
            log_once(log, "meter.zlib", "meter: undecodable compressed body from %s", self.record.server,
                     level=logging.WARNING)
            self.framing = "opaque"

    def _take(self, data: bytes, now: float) -> None:
        if self.framing == "json":
            if self._body_truncated:
                return
            if len(self._body) + len(data) <= BODY_CAP:
                self._body += data
            else:  # kept as far as it went, and never parsed: a body with a hole is no body
                self._body_truncated = True
            return
        if self.framing == "ndjson":
            for line in self._lines.feed(data):
                if line is None:
                    self._dropped_line()
                elif line.strip():
                    self._parse(line, now)
        elif self.framing == "sse":
            for line in self._lines.feed(data):
                if line is None:
                    self._dropped_line()
                else:
                    self._sse_line(line.rstrip(b"\r"), now)
        # "opaque": the inflater gave up on this body

    def _dropped_line(self) -> None:
        log_once(log, "meter.line_cap", "meter: a line over %d bytes from %s was not parsed "
                 "(it passed through unchanged)", LINE_CAP, self.record.server, level=logging.WARNING)
        self._sse_dropped = True  # (an SSE event with a line missing is not parsed either)

    def _sse_line(self, line: bytes, now: float) -> None:
        if not line:  # a blank line ends the event
            data, dropped = self._sse_data, self._sse_dropped
            self._sse_data, self._sse_size, self._sse_dropped = [], 0, False
            if data and not dropped:
                payload = b"\n".join(data)
                if payload.strip() == b"[DONE]":
                    self.ended = True
                else:
                    self._parse(payload, now)
            return
        if line.startswith(b"data:") and not self._sse_dropped:
            value = line[5:]
            value = value[1:] if value.startswith(b" ") else value
            self._sse_size += len(value) + 1
            if self._sse_size > LINE_CAP:  # an event of many lines: capped like one line
                self._dropped_line()
                self._sse_data = []
            else:
                self._sse_data.append(value)
        # "event:", "id:", "retry:" and ":" comments carry nothing the meter needs

    def _parse(self, raw: bytes, now: float) -> None:
        obj = loads(raw)
        if obj is None:
            log.debug("meter: non-JSON chunk from %s: %.80r", self.record.server, raw)
        elif isinstance(obj, dict):
            try:
                self.observe(obj, now)
            except Exception as exc:
                self._fault("observe", exc)

    def _fault(self, where: str, exc: Exception) -> None:
        """A bug or an input nobody foresaw: logged once per kind, the request goes on."""
        log_once(log, f"meter.{where}.{type(exc).__name__}",
                 "meter: %s failed on a response from %s; that part is not metered", where,
                 self.record.server, exc_info=True)

    # ------------------------------------------------------------------ interpreting
    def observe(self, obj: dict[str, Any], now: float) -> None:
        """Take what one JSON object (a chunk or a whole body) says about the request."""
        rec = self.record
        if obj.get("error"):
            if not rec.error_type:
                rec.error_type = "stream_error" if rec.stream else "http"
                rec.error = error_message(obj["error"])
            return
        model = obj.get("model")
        if isinstance(model, str) and model and not rec.model:
            rec.model = model
        text, token = "", False
        if "done" in obj:  # Ollama's native API: every line before the last is one token
            text = self._ollama_content(obj)
            token = not obj.get("done") or bool(text)
            if obj.get("done"):
                self.ended = True
                self._ollama_final = obj
                if isinstance(obj.get("done_reason"), str):
                    rec.finish_reason = obj["done_reason"]
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                part, is_token = self._openai_content(choice)
                text += part
                token = token or is_token
                reason = choice.get("finish_reason")
                if isinstance(reason, str) and reason:
                    rec.finish_reason = reason
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage_prompt = _count(usage.get("prompt_tokens"))
            self._usage_completion = _count(usage.get("completion_tokens"))
        if isinstance(obj.get("timings"), dict):
            self._timings = obj["timings"]
        if "prompt_eval_count" in obj and "done" not in obj:  # /api/embed answers
            self._ollama_final = obj
        if token:
            self._token_chunks += 1
            self._token_times.append(now)
        if text:
            if self._first_text is None:
                self._first_text = now
            if self.keep_text and self._text_len < self.keep_text:
                self._text.append(text)
                self._text_len += len(text)
            if self.on_text is not None:
                try:
                    self.on_text(text)
                except Exception as exc:  # the reader's fault, not the response's
                    self._fault("on_text", exc)

    @staticmethod
    def _ollama_content(obj: dict[str, Any]) -> str:
        text = obj.get("response")
        message = obj.get("message")
        parts = [text if isinstance(text, str) else ""]
        if isinstance(obj.get("thinking"), str):
            parts.append(obj["thinking"])
        if isinstance(message, dict):
            for key in ("content", "thinking"):
                if isinstance(message.get(key), str):
                    parts.append(message[key])
            if message.get("tool_calls"):
                parts.append(dumps(message["tool_calls"]))
        return "".join(parts)

    @staticmethod
    def _openai_content(choice: dict[str, Any]) -> tuple[str, bool]:
        """The text of one choice of a chunk, and whether the chunk carries a token: servers
        send one chunk per token, some with empty text (a character split across tokens),
        besides a role-only first chunk and often a finish-only last one (``delta: {}``)."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            message = choice.get("message")
            delta = message if isinstance(message, dict) else {}
        parts = []
        carries = False
        for key in ("content", "reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str):
                parts.append(delta[key])
                carries = True
        if delta.get("tool_calls"):
            parts.append(dumps(delta["tool_calls"]))
        if isinstance(choice.get("text"), str):  # /v1/completions
            parts.append(choice["text"])
            carries = True
        text = "".join(parts)
        return text, bool(text) or (carries and "role" not in delta)

    # ------------------------------------------------------------------ finishing
    def finish(self, now: float) -> RequestRecord:
        """Complete the record at clock value ``now`` (end of body, error or cancel). Never
        raises: what could not be worked out stays ``None``."""
        rec = self.record
        rec.latency_s = now - self.t0
        try:
            self._finish(now)
        except Exception as exc:
            self._fault("finish", exc)
        return rec

    def _finish(self, now: float) -> None:
        rec = self.record
        if self.framing != "opaque":
            for piece in self._inflate(b"", final=True):
                self._take(piece, now)
        if self.framing == "json" and self._body:
            self._finish_body(now)
        elif self.framing in ("ndjson", "sse"):
            rest = self._lines.rest()  # a last line without its newline
            if rest is None:
                self._dropped_line()
            elif rest.strip() and self.framing == "ndjson":
                self._parse(rest, now)
            elif rest.strip():
                self._sse_line(rest.rstrip(b"\r"), now)
            if self.framing == "sse":
                self._sse_line(b"", now)  # a last event without its blank line
        times = self._token_times
        if rec.stream and (self._first_text is not None or times):
            rec.ttft_s = (self._first_text if self._first_text is not None else times[0]) - self.t0
        if times:
            gaps = sorted(b - a for a, b in itertools.pairwise(times))
            if gaps:  # two token chunks make one gap: its mean, median, p99 and max alike
                rec.itl_mean_s = math.fsum(gaps) / len(gaps)
                rec.itl_p50_s = _quantile(gaps, 0.50)
                rec.itl_p99_s = _quantile(gaps, 0.99)
                rec.itl_max_s = gaps[-1]
        self._apply_counts()
        n = rec.completion_tokens
        if n:
            if rec.stream and len(times) >= 2 and n > 1:
                span = times[-1] - times[0]
                rec.client_tokens_per_s = _speed((n - 1) / span) if span > 0 else None
            elif not rec.stream and rec.latency_s:
                rec.client_tokens_per_s = _speed(n / rec.latency_s)
        if self._text:
            rec.response_text = "".join(self._text)[: self.keep_text]

    def _finish_body(self, now: float) -> None:
        rec = self.record
        body = bytes(self._body)
        self._body = bytearray()
        obj = None if self._body_truncated else loads(body)
        if obj is None:
            if rec.status >= 400 and not rec.error:
                rec.error = body[:ERROR_TEXT_CAP].decode("utf-8", "replace").strip()
            elif self._body_truncated:
                log_once(log, "meter.body_cap", "meter: a body over %d bytes from %s was not parsed",
                         BODY_CAP, rec.server, level=logging.INFO)
            return
        if isinstance(obj, dict):
            self.observe(obj, now)

    def _apply_counts(self) -> None:
        rec = self.record
        final = self._ollama_final
        timings = self._timings
        if final is not None:
            rec.prompt_tokens = _count(final.get("prompt_eval_count"))
            rec.completion_tokens = _count(final.get("eval_count"))
            rec.server_tokens_per_s = _rate(final.get("eval_count"), final.get("eval_duration"))
            rec.prompt_tokens_per_s = _rate(final.get("prompt_eval_count"), final.get("prompt_eval_duration"))
            rec.load_s = _seconds(final.get("load_duration"))
        if self._usage_prompt is not None:
            rec.prompt_tokens = self._usage_prompt
        if self._usage_completion is not None:
            rec.completion_tokens = self._usage_completion
        if timings is not None:
            # llama.cpp: the server's own decode/prefill speeds; its counts when usage is absent.
            rec.server_tokens_per_s = _speed(timings.get("predicted_per_second"))
            rec.prompt_tokens_per_s = _speed(timings.get("prompt_per_second"))
            if rec.completion_tokens is None:
                rec.completion_tokens = _count(timings.get("predicted_n"))
            evaluated = _count(timings.get("prompt_n"))
            if rec.prompt_tokens is None and evaluated is not None:
                # prompt_n counts only what was evaluated now; cache_n came from the cache
                rec.prompt_tokens = evaluated + (_count(timings.get("cache_n")) or 0)
        if rec.completion_tokens is None and self._token_chunks and rec.stream:
            # A stream sends one chunk per token. (A whole body is one object, not one token:
            # without the server's count, its count stays unknown.)
            rec.completion_tokens = self._token_chunks
            rec.tokens_estimated = True


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted, non-empty values, interpolated linearly between ranks
    (as ``statistics.quantiles(method="inclusive")`` and numpy's default do)."""
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
