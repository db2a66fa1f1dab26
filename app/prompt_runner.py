"""The prompt test: send one prompt to one or several models and measure each answer with the
same meter the proxy uses, so the figures agree with what the proxy records.

Each run streams on its own thread; the caller gets the text as it arrives (``on_text``), the
figures known so far (``on_progress``: TTFT from the first text on, and a running decode rate)
and the finished :class:`~app.records.RequestRecord` (``on_done``), which is also published through the
hub (``source="prompt_test"``) so the store, the request statistics and the per-model view see
it. The prompt and the answer are kept with the record (capped): the user typed them into
llmmon itself, and the panel's history shows them.

    run = PromptRun(PromptTarget("ollama@127.0.0.1:11434", "http://127.0.0.1:11434", "ollama",
                                 "llama3.2"), PromptRequest("Why is the sky blue?"), hub.publish)
    run.start(); run.join(); print(run.record.ttft_s, run.record.server_tokens_per_s)
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.proxy.log_once import log_once
from app.proxy.meter import ERROR_TEXT_CAP, Meter
from app.records import Record, RequestRecord
from app.server_kinds import Api, server_kind

log = logging.getLogger(__name__)

TEXT_CAP = 64 * 1024


@dataclass(frozen=True)
class PromptTarget:
    """Where a prompt goes: a server (display name, base URL, kind) and a model on it."""

    server: str
    base_url: str
    kind: str
    model: str
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What a run has measured while its answer still streams: the time to first text (the
    meter's TTFT, on the same clock), how many chunks with text arrived and for how long since
    the first. The running rate counts chunks (about one token each); the finished record
    carries the server's own count."""

    ttft_s: float
    chunks: int
    decoding_s: float

    @property
    def tokens_per_s(self) -> float | None:
        return (self.chunks - 1) / self.decoding_s if self.chunks > 1 and self.decoding_s > 0 else None


@dataclass(frozen=True)
class PromptRequest:
    """What to send. ``None`` parameters are left to the server's defaults."""

    prompt: str
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


def request_for(target: PromptTarget, req: PromptRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body in the dialect of the target's server kind (Ollama's
    native chat, or OpenAI's)."""
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
        {"role": "user", "content": req.prompt}]
    if server_kind(target.kind).api is Api.OLLAMA:
        options = {k: v for k, v in (("temperature", req.temperature), ("num_predict", req.max_tokens),
                                     ("seed", req.seed)) if v is not None}
        body: dict[str, Any] = {"model": target.model, "messages": messages, "stream": True}
        if options:
            body["options"] = options
        return "/api/chat", body
    body = {"model": target.model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}}
    body.update({k: v for k, v in (("temperature", req.temperature), ("max_tokens", req.max_tokens),
                                   ("seed", req.seed)) if v is not None})
    return "/v1/chat/completions", body


class PromptRun:
    """One prompt against one target, on a thread of its own; cancellable from any thread."""

    def __init__(self, target: PromptTarget, request: PromptRequest,
                 publish: Callable[[list[Record]], None] | None = None,
                 on_text: Callable[[str], None] | None = None,
                 on_done: Callable[[RequestRecord], None] | None = None,
                 timeout_s: float = 300.0,
                 on_progress: Callable[[LiveFigures], None] | None = None) -> None:
        self.target = target
        self.request = request
        self.publish = publish
        self.on_text = on_text
        self.on_done = on_done
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self._t0 = 0.0
        self._chunk_at = 0.0              # clock value of the chunk being fed to the meter
        self._first_text: float | None = None
        self._text_chunks = 0
        self.record = RequestRecord(ts_start=0.0, server=target.server, endpoint="", model=target.model,
                                    client="llmmon prompt test", source="prompt_test",
                                    prompt_text=request.prompt[:TEXT_CAP])
        self._cancel = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meter: Meter | None = None
        self._task: asyncio.Task[Any] | None = None
        self._thread = threading.Thread(target=self._run, name=f"prompt-{target.model}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop now, even while the server is silent (a long prefill): the request's task is
        cancelled on its own event loop and the connection closed."""
        self._cancel.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        rec = self.record
        t0 = self._t0 = time.perf_counter()
        try:
            if self._cancel.is_set():  # cancelled before the loop existed
                raise asyncio.CancelledError
            await self._stream(t0)
        except asyncio.CancelledError:
            rec.error_type, rec.error = "cancelled", "cancelled by the user"
        except httpx.TimeoutException as exc:
            rec.error_type, rec.error = "timeout", f"no answer within {self.timeout_s:.0f} s ({exc})"
        except (httpx.HTTPError, httpx.StreamError) as exc:
            kind = "upstream_down" if rec.status == 0 else "upstream_disconnect"
            rec.error_type, rec.error = kind, f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_CAP]
        except Exception as exc:  # a bug: the run still ends, recorded, and says why
            log_once(log, f"prompt.{type(exc).__name__}", "prompt test on %s failed", rec.server, exc_info=True)
            rec.error_type = "internal_error"
            rec.error = f"llmmon: internal error ({type(exc).__name__}: {exc})"[:ERROR_TEXT_CAP]
        now = time.perf_counter()
        if self._meter is not None:
            self._meter.finish(now)
        else:
            rec.latency_s = now - t0
        if rec.status >= 400 and not rec.error_type:
            rec.error_type = "http"
        _deliver(self.publish, [rec])
        _deliver(self.on_done, rec)

    async def _stream(self, t0: float) -> None:
        path, body = request_for(self.target, self.request)
        rec = self.record
        rec.endpoint = path
        rec.ts_start = time.time()
        headers = {"Authorization": f"Bearer {self.target.api_key}"} if self.target.api_key else {}
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=5.0)) as client:
            async with client.stream("POST", self.target.base_url.rstrip("/") + path, json=body,
                                     headers=headers) as response:
                rec.status = response.status_code
                self._meter = Meter(rec, t0, response.headers.get("content-type", ""),
                                    keep_text=TEXT_CAP, on_text=self._text_arrived)
                async for chunk in response.aiter_raw():
                    self._chunk_at = time.perf_counter()
                    self._meter.feed(chunk, self._chunk_at)

    def _text_arrived(self, text: str) -> None:
        """The meter read text from the chunk fed at ``_chunk_at``: pass it on, with the figures."""
        if self._first_text is None:
            self._first_text = self._chunk_at
        self._text_chunks += 1
        if self.on_text is not None:
            self.on_text(text)
        if self.on_progress is not None:
            self.on_progress(LiveFigures(self._first_text - self._t0, self._text_chunks,
                                         self._chunk_at - self._first_text))


def _deliver(callback: Callable[[Any], None] | None, value: Any) -> None:
    """Hand the result on; one receiver failing must not keep it from the other."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.exception("prompt test: passing on the result failed")
