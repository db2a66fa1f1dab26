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

>>> rec = RequestRecord(ts_start=0.0, server="ollama@127.0.0.1:11434", endpoint="/api/generate")
>>> m = Meter(rec, t0=0.0, content_type="application/x-ndjson")
>>> m.feed(b'{"response":"Hi","done":false}\\n', 0.25)
>>> m.feed(b'{"response":"","done":true,"eval_count":1,"eval_duration":5000000}\\n', 0.5)
>>> m.finish(0.5); (rec.ttft_s, rec.completion_tokens, rec.server_tokens_per_s)
(0.25, 1, 200.0)
"""
from __future__ import annotations

import itertools
import json
import logging
import statistics
import zlib
from collections.abc import Callable
from typing import Any

from app.records import RequestRecord

log = logging.getLogger(__name__)

NS = 1e-9
BODY_CAP = 4 * 1024 * 1024   # the most of a non-streamed body the meter keeps to parse
ERROR_TEXT_CAP = 500


def framing_of(content_type: str) -> str:
    """``"ndjson"``, ``"sse"`` or ``"json"`` (one body) for a response ``Content-Type``."""
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"):
        return "ndjson"
    if ct == "text/event-stream":
        return "sse"
    return "json"


def error_message(obj: Any) -> str:
    """The human text of an ``{"error": ...}`` value: Ollama's string or OpenAI's object."""
    if isinstance(obj, dict):
        inner = obj.get("message") or obj.get("type") or json.dumps(obj)
        return str(inner)[:ERROR_TEXT_CAP]
    return str(obj)[:ERROR_TEXT_CAP]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
        self._buf = b""
        self._body = bytearray()
        self._body_truncated = False
        self._sse_data: list[bytes] = []
        self._token_times: list[float] = []   # arrival of each chunk that carries a token
        self._token_chunks = 0
        self._first_text: float | None = None  # arrival of the first chunk with text
        self._decoder = None
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
        """Read the next bytes of the body, received at clock value ``now``."""
        self.record.bytes_out += len(data)
        if self.framing == "opaque" or not data:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                log.warning("meter: undecodable compressed body from %s", self.record.server)
                self.framing = "opaque"
                return
        if self.framing == "json":
            if len(self._body) + len(data) <= BODY_CAP:
                self._body += data
            else:
                self._body_truncated = True
            return
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()  # the unfinished tail (b"" when data ended on a newline)
        if self.framing == "ndjson":
            for line in lines:
                if line.strip():
                    self._parse(line, now)
        else:
            for line in lines:
                self._sse_line(line.rstrip(b"\r"), now)

    def _sse_line(self, line: bytes, now: float) -> None:
        if not line:  # a blank line ends the event
            if self._sse_data:
                payload = b"\n".join(self._sse_data)
                self._sse_data = []
                if payload.strip() != b"[DONE]":
                    self._parse(payload, now)
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._sse_data.append(value[1:] if value.startswith(b" ") else value)
        # "event:", "id:", "retry:" and ":" comments carry nothing the meter needs

    def _parse(self, raw: bytes, now: float) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            log.debug("meter: non-JSON chunk from %s: %.80r", self.record.server, raw)
            return
        if isinstance(obj, dict):
            self.observe(obj, now)

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
            self._usage_prompt = _int(usage.get("prompt_tokens"))
            self._usage_completion = _int(usage.get("completion_tokens"))
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
                self.on_text(text)

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
                parts.append(json.dumps(message["tool_calls"]))
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
            parts.append(json.dumps(delta["tool_calls"]))
        if isinstance(choice.get("text"), str):  # /v1/completions
            parts.append(choice["text"])
            carries = True
        text = "".join(parts)
        return text, bool(text) or (carries and "role" not in delta)

    # ------------------------------------------------------------------ finishing
    def finish(self, now: float) -> RequestRecord:
        """Complete the record at clock value ``now`` (end of body, error or cancel)."""
        rec = self.record
        if self.framing == "json" and self._body:
            self._finish_body(now)
        elif self.framing == "ndjson" and self._buf.strip():
            self._parse(self._buf, now)  # a last line without its newline
        elif self.framing == "sse" and self._sse_data:
            self._sse_line(b"", now)
        self._buf = b""
        rec.latency_s = now - self.t0
        times = self._token_times
        if rec.stream and (self._first_text is not None or times):
            rec.ttft_s = (self._first_text if self._first_text is not None else times[0]) - self.t0
        if len(times) >= 2:
            gaps = [b - a for a, b in itertools.pairwise(times)]
            rec.itl_mean_s = statistics.fmean(gaps)
            rec.itl_p50_s = statistics.median(gaps)
            rec.itl_p99_s = statistics.quantiles(gaps, n=100, method="inclusive")[98]
            rec.itl_max_s = max(gaps)
        self._apply_counts()
        if rec.completion_tokens is not None:
            if rec.stream and len(times) >= 2 and times[-1] > times[0] and rec.completion_tokens > 1:
                rec.client_tokens_per_s = (rec.completion_tokens - 1) / (times[-1] - times[0])
            elif not rec.stream and rec.latency_s and rec.completion_tokens:
                rec.client_tokens_per_s = rec.completion_tokens / rec.latency_s
        if self._text:
            rec.response_text = "".join(self._text)[: self.keep_text]
        return rec

    def _finish_body(self, now: float) -> None:
        rec = self.record
        body = bytes(self._body)
        self._body = bytearray()
        if self._decoder is not None:
            body += self._decoder.flush()
        try:
            obj = json.loads(body)
        except ValueError:
            if rec.status >= 400 and not rec.error:
                rec.error = body[:ERROR_TEXT_CAP].decode("utf-8", "replace").strip()
            elif self._body_truncated:
                log.info("meter: body over %d bytes from %s not parsed", BODY_CAP, rec.server)
            return
        if isinstance(obj, dict):
            self.observe(obj, now)

    def _apply_counts(self) -> None:
        rec = self.record
        final = self._ollama_final
        timings = self._timings
        if final is not None:
            rec.prompt_tokens = _int(final.get("prompt_eval_count"))
            rec.completion_tokens = _int(final.get("eval_count"))
            rec.server_tokens_per_s = _rate(final.get("eval_count"), final.get("eval_duration"))
            rec.prompt_tokens_per_s = _rate(final.get("prompt_eval_count"), final.get("prompt_eval_duration"))
            load = _num(final.get("load_duration"))
            rec.load_s = load * NS if load is not None else None
        if self._usage_prompt is not None:
            rec.prompt_tokens = self._usage_prompt
        if self._usage_completion is not None:
            rec.completion_tokens = self._usage_completion
        if timings is not None:
            # llama.cpp: the server's own decode/prefill speeds; its counts when usage is absent.
            rec.server_tokens_per_s = _num(timings.get("predicted_per_second"))
            rec.prompt_tokens_per_s = _num(timings.get("prompt_per_second"))
            if rec.completion_tokens is None:
                rec.completion_tokens = _int(timings.get("predicted_n"))
            evaluated = _int(timings.get("prompt_n"))
            if rec.prompt_tokens is None and evaluated is not None:
                # prompt_n counts only what was evaluated now; cache_n came from the cache
                rec.prompt_tokens = evaluated + (_int(timings.get("cache_n")) or 0)
        if rec.completion_tokens is None and self._token_chunks:
            rec.completion_tokens = self._token_chunks
            rec.tokens_estimated = True


def _rate(count: Any, duration_ns: Any) -> float | None:
    n, d = _num(count), _num(duration_ns)
    if n is None or not d:
        return None
    return n / (d * NS)

