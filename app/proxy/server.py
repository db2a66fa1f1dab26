"""A running proxy: one listening socket, one upstream, its own event loop on its own thread.

The stack is aiohttp for both sides (its server for clients, one pooled ``ClientSession``
upstream) on uvloop where available. Chosen by measurement on this 2-core machine, same
upstream, same run: an aiohttp→aiohttp passthrough added ~0.25 ms and cost ~0.19 ms of CPU
per request, where the same server with an ``httpx.AsyncClient`` upstream added ~0.5 ms and
cost ~0.5 ms (and ~3x more CPU per streamed chunk); uvicorn+httptools in front made no
difference. With the meter and a real store, the proxy stays well inside its 1 ms budget
(docs/architecture.md, "Performance bars"; bench/proxy_overhead.py, docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from app.proxy.forward import Forwarder
from app.proxy.options import ForwardOptions, is_loopback, port_problem, server_label, url_host
from app.records import Record

log = logging.getLogger(__name__)


class ClientErrorLog(logging.LoggerAdapter[logging.Logger]):
    """The log of aiohttp's server side. aiohttp logs each malformed client request (a bad
    header, a garbled request line) with a full traceback; the client's mistake needs one
    line. Anything else (a fault of aiohttp or of the proxy) keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            what = " ".join(f"{exc.message or exc}".split())[:200]  # one line, whatever was sent
            self.logger.warning("%s: %d %s", str(msg) % args if args else msg, exc.code, what)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # not on Windows; the standard loop works there, a little slower
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProxyServer:
    """A metering reverse proxy in front of one LLM server.

    Args:
        upstream: the server's base URL, e.g. ``http://127.0.0.1:11434``.
        listen_host: the address to listen on; loopback unless the user opts in.
        listen_port: the port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        publish: receives a ``[RequestRecord]`` for each finished inference request, on the
            proxy's thread (``Hub.publish`` is the usual one); it must be quick.
        name: the ``server`` label of the records; default ``kind@host:port`` of the upstream.
        kind: ``ollama``, ``vllm``, ``llamacpp``, ``openai`` or ``auto`` (guessed from the port).
        options: timeouts and opt-ins, see :class:`ForwardOptions`.
        keepalive_timeout: an idle (or never-finished, slowloris-style) client connection is
            closed after this many seconds.
    """

    def __init__(self, upstream: str, *, listen_host: str = "127.0.0.1", listen_port: int = 0,
                 publish: Callable[[list[Record]], None] | None = None, name: str = "",
                 kind: str = "auto", options: ForwardOptions | None = None,
                 keepalive_timeout: float = 75.0, shutdown_timeout: float = 2.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.listen_host = listen_host.strip("[]")  # "[::1]" as written in a URL is ::1
        self.listen_port = listen_port
        self.name = name or server_label(upstream, kind)
        self.options = options or ForwardOptions()
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_timeout = shutdown_timeout
        self._publish = publish or (lambda records: None)
        self.port: int | None = None
        self.error = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._forwarder: Forwarder | None = None
        self._server: web.Server | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> int:
        """Start listening; returns the bound port. Raises ``OSError`` when the address is
        taken or not allowed (the message names it)."""
        if self._thread is not None:
            return self.port or 0
        if self.listen_port != 0 and (problem := port_problem(self.listen_port)):  # 0: any free port
            self.error = f"cannot listen on {self.listen_host}:{self.listen_port}: {problem}"
            raise OSError(self.error)
        self.error = ""
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"llmmon-proxy-{self.name}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.error = f"proxy for {self.upstream} did not start within {timeout:g} s"
        if self.error:
            self._thread.join(timeout)
            self._thread = None
            raise OSError(self.error)
        return self.port or 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, end in-flight requests (recorded as cancelled), close the pool."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            log.error("proxy %s did not stop within %.0f s", self.name, timeout)
        self._thread = None
        self.port = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.port is not None

    @property
    def url(self) -> str:
        """Where clients should point (``http://127.0.0.1:11435``)."""
        return f"http://{url_host(self.listen_host)}:{self.port or self.listen_port}"

    @property
    def active_requests(self) -> int:
        """Inference requests in flight right now."""
        return self._forwarder.active if self._forwarder is not None else 0

    def diagnostics(self, timeout: float = 5.0) -> dict[str, int]:
        """Tasks and client connections alive on the proxy's loop (for leak checks)."""
        loop = self._loop
        if loop is None or not self.running:
            return {"tasks": 0, "client_connections": 0, "active_requests": 0}

        async def probe() -> dict[str, int]:
            current = asyncio.current_task()
            return {"tasks": len([t for t in asyncio.all_tasks() if t is not current]),
                    "client_connections": len(self._server.connections) if self._server else 0,
                    "active_requests": self.active_requests}
        return asyncio.run_coroutine_threadsafe(probe(), loop).result(timeout)

    # ---------------------------------------------------------------- the loop thread
    def _run(self) -> None:
        loop = _new_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # anything here means the proxy could not run at all
            self.error = self.error or f"proxy for {self.upstream}: {exc}"
            log.exception("proxy %s failed", self.name)
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        # Idle upstream connections are dropped after 4 s, before servers drop them (uvicorn,
        # llama.cpp's httplib: 5 s), so a reused connection is rarely a closed one.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            trust_env=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
        self._forwarder = Forwarder(self.upstream, self.name, session, self._publish, self.options,
                                    check_host=is_loopback(self.listen_host))
        self._server = web.Server(self._forwarder, handler_cancellation=True,
                                  keepalive_timeout=self.keepalive_timeout, access_log=None,
                                  logger=ClientErrorLog(logging.getLogger("aiohttp.server"), {}))
        runner = web.ServerRunner(self._server, handle_signals=False,
                                  shutdown_timeout=self.shutdown_timeout)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.listen_host, self.listen_port, backlog=1024)
            try:
                await site.start()
            except OSError as exc:
                self.error = (f"cannot listen on {self.listen_host}:{self.listen_port} "
                              f"({exc.strerror or exc}); is another program using that port?")
                return
            self.port = int(runner.addresses[0][1])
            log.info("proxy %s listening on %s → %s", self.name, self.url, self.upstream)
            self._ready.set()
            await self._stop.wait()
            self._forwarder.stopping = True
        finally:
            await runner.cleanup()
            await session.close()
            log.info("proxy %s stopped", self.name)
