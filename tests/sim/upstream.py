"""A simulated streaming LLM server on 127.0.0.1 that replays recorded real answers.

It answers the inference routes of Ollama and of OpenAI-compatible servers with the files in
``tests/sim/recordings/streams/`` (see the README there for where each came from), one
recorded line (NDJSON) or event (SSE) per write, so the chunking a client sees is the
server's. Like vLLM, it sends the usage-only SSE chunk only when the request asked for
``stream_options.include_usage``. Faults can be injected for the next requests:

* ``first_delay_s`` / ``chunk_delay_s``: wait before the first chunk / between chunks;
  ``delays_s={i: s}``: wait ``s`` before chunk ``i`` instead;
* ``cut_after=N``: drop the connection after N chunks (no end of body);
* ``hang=True``: accept the request and send nothing until :meth:`release` or stop;
* ``fail=(status, file)``: answer with a recorded error body and that status;
* ``raw=(status, content_type, chunks)``: answer with exactly these bytes (a server gone wrong);
* ``drop_requests=N``: close the connection on the next N requests without a word;
* ``final_fields={"eval_count": "NaN", ...}``: raw JSON text put in as those fields of the
  answer's last object (a dotted name reaches into an object: ``"timings.predicted_n"``), for a
  server that reports garbled numbers;
* ``hold_before_end=True``: after the last chunk, wait for :meth:`release` before ending the
  body (the client has the whole answer, the connection is still open);
* ``huge_line=N``: the first line of an NDJSON answer carries N bytes of text (the first SSE
  event a ``padding`` field of N bytes), written in 64 KiB pieces; with ``hold_mid_line`` the
  server waits half-way through it for :meth:`release`.

Like Ollama, it honours ``options.num_predict`` on NDJSON routes: the recorded stream is cut
after that many token lines and ends with its final object saying ``"done_reason": "length"``
(and, when the recording has counts, ``eval_count`` N with ``eval_duration`` scaled to N).
A request body it cannot parse (not JSON, or nested too deep) gets a 400, as from Ollama.

Everything it received and sent is kept in :attr:`requests` (:class:`SimRequest`), so a test
compares what a client got with what the server sent, byte for byte.

>>> with SimUpstream() as up:                                    # doctest: +SKIP
...     httpx.post(f"{up.url}/api/generate", json={"model": "m", "prompt": "hi"})
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

RECORDINGS = Path(__file__).with_name("recordings") / "streams"

CONTENT_TYPES = {".ndjson": "application/x-ndjson", ".sse": "text/event-stream; charset=utf-8",
                 ".json": "application/json"}

# path -> (streamed answer, non-streamed answer, streams unless the body says otherwise?)
DEFAULT_ROUTES: dict[str, tuple[str, str, bool]] = {
    "/api/chat": ("ollama_chat_stream.ndjson", "ollama_chat.json", True),
    "/api/generate": ("ollama_generate_stream_counts.ndjson", "ollama_generate.json", True),
    "/v1/chat/completions": ("vllm_stream.sse", "vllm_chat.json", False),
}

STATIC = {"/v1/models": "vllm_models.json"}
PIECE = 64 * 1024  # how a huge line is written  # GET routes answered with a recorded body


def recording(name: str) -> bytes:
    return (RECORDINGS / name).read_bytes()


def chunks_of(name: str) -> list[bytes]:
    """The writes a recorded answer is replayed as: NDJSON lines or SSE events."""
    data = recording(name)
    if name.endswith(".ndjson"):
        return [line + b"\n" for line in data.split(b"\n") if line.strip()]
    if name.endswith(".sse"):
        return [event + b"\n\n" for event in data.split(b"\n\n") if event.strip()]
    return [data]


def with_fields(line: bytes, fields: dict[str, str]) -> bytes:
    """``line`` (a JSON object, or an SSE ``data:`` event of one) with ``fields`` set to raw
    JSON text, which may be what ``json`` cannot write (``NaN``, ``1e400``)."""
    text = line.strip()
    prefix = b"data: " if text.startswith(b"data:") else b""
    obj = json.loads(text[5:] if prefix else text)
    for i, name in enumerate(fields):
        *parents, key = name.split(".")
        target = obj
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = f"@@{i}@@"
    out = json.dumps(obj, separators=(",", ":"))
    for i, raw in enumerate(fields.values()):
        out = out.replace(f'"@@{i}@@"', raw)
    return prefix + out.encode() + line[len(line.rstrip()):]


def cut_to(chunks: list[bytes], n: int) -> list[bytes]:
    """An Ollama NDJSON stream as the server sends it with ``num_predict: n``: the first n
    token lines, then the final object with ``done_reason`` "length" and no text of its own."""
    objects = [json.loads(c) for c in chunks]
    tokens = [o for o in objects if not o.get("done")][:n]
    final = dict(next(o for o in objects if o.get("done")))
    final.update(done_reason="length", response="")
    if isinstance(final.get("eval_count"), int) and final["eval_count"] > 0:
        final["eval_duration"] = final["eval_duration"] * len(tokens) // final["eval_count"]
        final["eval_count"] = len(tokens)
    return [json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in [*tokens, final]]


def is_usage_only(event: bytes) -> bool:
    text = event.strip()
    if not text.startswith(b"data:") or text.endswith(b"[DONE]"):
        return False
    obj = json.loads(text[5:])
    return obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


@dataclass
class SimRequest:
    """One request the simulated server received, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    sent: bytearray = field(default_factory=bytearray)
    completed: bool = False       # the whole answer was written
    disconnected: bool = False    # the client (the proxy) went away before the end
    received_at: float = 0.0      # time.perf_counter() when the request arrived
    write_times: list[float] = field(default_factory=list)  # perf_counter() as each chunk is sent


class SimUpstream:
    """The simulated server, on its own thread and event loop. Use as a context manager."""

    def __init__(self, routes: dict[str, tuple[str, str, bool]] | None = None, port: int = 0) -> None:
        self.routes = dict(DEFAULT_ROUTES if routes is None else routes)
        self.first_delay_s = 0.0
        self.chunk_delay_s = 0.0
        self.delays_s: dict[int, float] = {}
        self.cut_after: int | None = None
        self.hang = False
        self.fail: tuple[int, str] | None = None
        self.raw: tuple[int, str, list[bytes]] | None = None
        self.drop_requests = 0
        self.final_fields: dict[str, str] = {}
        self.huge_line = 0
        self.hold_mid_line = False
        self.hold_before_end = False
        self.requests: list[SimRequest] = []
        self.port = port  # 0: any free port, the one bound after start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._server: web.Server | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimUpstream:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="sim-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulated upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None

    def release(self) -> None:
        """Let hanging requests go on."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def open_connections(self) -> int:
        """Client connections the server has open right now (idle keep-alive ones included)."""
        return len(self._server.connections) if self._server is not None else 0

    def __enter__(self) -> SimUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- serving
    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._release = asyncio.Event(), asyncio.Event()
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(self._server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        await self._stop.wait()
        self._release.set()
        await runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.drop_requests > 0:  # like a keep-alive connection closed as the request came
            self.drop_requests -= 1
            request.transport.abort()
            return web.Response()
        # content.read(), not request.read(): no 1 MiB cap, the 50 MB test body must arrive
        body = await request.content.read() if request.path != "/sim/echo" else b""
        entry = SimRequest(request.method, request.path, dict(request.headers), body,
                           received_at=time.perf_counter())
        self.requests.append(entry)
        self.in_flight += 1
        try:
            return await self._answer(request, entry)
        except (asyncio.CancelledError, ConnectionError):
            entry.disconnected = True
            raise
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.BaseRequest, entry: SimRequest) -> web.StreamResponse:
        if request.path == "/sim/echo":  # any method: what arrived, for pass-through tests
            digest, size = hashlib.sha256(), 0
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
            answer = json.dumps({"method": request.method, "raw_path": request.raw_path,
                                 "headers": dict(request.headers),
                                 "size": size, "sha256": digest.hexdigest()}).encode()
            entry.sent += answer
            entry.completed = True
            return web.Response(body=answer, content_type="application/json",
                                headers={"X-Sim": "echo"})
        if self.hang:
            await self._release.wait()
        if self.raw is not None:
            status, content_type, chunks = self.raw
            response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            await response.prepare(request)
            for chunk in chunks:
                await response.write(chunk)
                entry.sent += chunk
            await response.write_eof()
            entry.completed = True
            return response
        if self.fail is not None:
            status, name = self.fail
            data = recording(name)
            entry.sent += data
            entry.completed = True
            return web.Response(status=status, body=data, content_type="application/json")
        if request.path in STATIC:
            data = recording(STATIC[request.path])
            entry.sent += data
            entry.completed = True
            return web.Response(body=data, content_type="application/json")
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, body=b'{"error":"not found"}', content_type="application/json")
        stream_file, whole_file, streams_by_default = route
        try:
            ask = json.loads(entry.body or b"{}")
        except (ValueError, RecursionError):
            data = b'{"error":"invalid JSON in the request body"}'
            entry.sent += data
            entry.completed = True
            return web.Response(status=400, body=data, content_type="application/json")
        stream = ask.get("stream", streams_by_default)
        if not stream:
            await asyncio.sleep(self.first_delay_s)
            data = recording(whole_file)
            if self.final_fields:
                data = with_fields(data, self.final_fields)
            entry.sent += data
            entry.completed = True
            return web.Response(body=data, content_type="application/json")
        wants_usage = bool((ask.get("stream_options") or {}).get("include_usage"))
        chunks = [c for c in chunks_of(stream_file) if wants_usage or not is_usage_only(c)]
        limit = (ask.get("options") or {}).get("num_predict")
        if stream_file.endswith(".ndjson") and isinstance(limit, int) and limit > 0:
            chunks = cut_to(chunks, limit)
        if self.final_fields:
            last = max(i for i, c in enumerate(chunks) if c.strip() != b"data: [DONE]")
            chunks[last] = with_fields(chunks[last], self.final_fields)
        if self.huge_line:  # as text of the first NDJSON line; as an extra field of the first event
            field = "response" if stream_file.endswith(".ndjson") else "padding"
            chunks[0] = with_fields(chunks[0], {field: json.dumps("x" * self.huge_line)})
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[Path(stream_file).suffix]})
        await response.prepare(request)
        for i, chunk in enumerate(chunks):
            if self.cut_after is not None and i == self.cut_after:
                request.transport.abort()  # the connection drops: no end of body
                return response
            await asyncio.sleep(self.delays_s.get(i, self.first_delay_s if i == 0 else self.chunk_delay_s))
            entry.write_times.append(time.perf_counter())  # before: it cannot arrive earlier
            if len(chunk) > 2 * PIECE:
                await self._write_in_pieces(response, chunk, entry)
                continue
            await response.write(chunk)
            entry.sent += chunk
        if self.hold_before_end:
            await self._release.wait()
        await response.write_eof()
        entry.completed = True
        return response

    async def _write_in_pieces(self, response: web.StreamResponse, chunk: bytes, entry: SimRequest) -> None:
        """A huge line as a server writes it: piece by piece (each one awaited), holding
        half-way through when asked."""
        for start in range(0, len(chunk), PIECE):
            if self.hold_mid_line and start >= len(chunk) // 2 > start - PIECE:
                await self._release.wait()
            await response.write(chunk[start:start + PIECE])
            entry.sent += chunk[start:start + PIECE]
