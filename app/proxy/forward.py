"""Forwarding one request: client → upstream → client, bytes unchanged, metered on the way.

Any method and path is forwarded; headers too, minus the hop-by-hop ones (RFC 9110 §7.6.1).
Inference calls (see :func:`~app.proxy.request_body.is_metered`) get a
:class:`~app.records.RequestRecord`, published when the request ends however it ends:

=====================  ==================================================================
``error_type``         what happened
=====================  ==================================================================
``""``                 the upstream answered and the client got all of it
``"http"``             the upstream answered with an HTTP error status (>= 400)
``"stream_error"``     a ``{"error": ...}`` chunk inside a 200 stream (Ollama, vLLM)
``"upstream_down"``    the upstream refused the connection: the client gets a 502 JSON error
``"upstream_disconnect"`` the upstream closed mid-answer: the client's connection is cut
                       too, so it sees an incomplete body rather than a clean end
``"timeout"``          no byte from the upstream for ``read_timeout`` s (504 before the
                       headers, a cut connection after)
``"cancelled"``        the client went away; the upstream request is closed at once
``"forbidden_host"``   refused with a 403: the proxy listens on loopback and the ``Host``
                       header named another host (a web page using DNS rebinding)
``"internal_error"``   the proxy itself failed on this request (a bug; logged once per
                       kind): a 500 if nothing was sent yet, else a cut connection
=====================  ==================================================================

Nothing one request does stops the proxy: every exception ends that request alone, with a
record that says what happened (a status and an error type).

DNS-rebinding protection: a web page can make a browser send requests to a loopback port
under a host name it controls. Servers like Ollama refuse a ``Host`` that is not local; the
proxy replaces the ``Host`` header with the upstream's, so when it listens on loopback it
checks it first: only ``localhost`` and loopback addresses (``127.0.0.1``, ``[::1]``...),
with any port (an SSH tunnel or a container's port map changes the port, not the name).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from app.proxy.log_once import log_once
from app.proxy.meter import ERROR_TEXT_CAP, Meter
from app.proxy.options import ForwardOptions
from app.proxy.request_body import BodyInfo, UsageStripper, inspect_body, is_metered
from app.records import Record, RequestRecord

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "expect",
})
READ_WHOLE_BODY = 16 * 1024 * 1024   # bodies up to this are read (and inspected) at once
BODY_CHUNK = 256 * 1024
STALE_RETRIES = 2  # re-sends of a request whose pooled connection the server had closed


def forward_headers(headers: Mapping[str, str], drop_length: bool = False) -> CIMultiDict[str]:
    """The headers to pass on: all but hop-by-hop ones (and those ``Connection`` names)."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        low = key.lower()
        if low in HOP_BY_HOP or low in named or (drop_length and low == "content-length"):
            continue
        out.add(key, value)
    return out


def error_body(path: str, message: str, kind: str, status: int) -> bytes:
    """A JSON error in the shape the client's library reads: Ollama's for ``/api/...``,
    OpenAI's otherwise."""
    if path.startswith("/api/"):
        return json.dumps({"error": message}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


@dataclass(slots=True)
class Progress:
    """How far one request got. ``answered``: the end of the answer reached the client (the
    whole body, or the stream's own end: ``data: [DONE]``, Ollama's ``"done": true``). A
    client that hangs up after that has not cancelled anything: the official ``openai``
    client closes the connection as soon as it reads ``[DONE]``."""

    answered: bool = False


def is_loopback_host(header: str | None) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name: ``localhost`` or a
    loopback address, with or without a port. No header at all passes (HTTP/1.0; browsers
    always send one).

    >>> [is_loopback_host(h) for h in ("localhost:11435", "127.0.0.1", "[::1]:8001", "evil.example:11435")]
    [True, True, True, False]
    """
    if not header:
        return True
    value = header.strip().lower()
    if value.startswith("["):
        name, _, port = value[1:].partition("]")
        if port and not (port.startswith(":") and _is_port(port[1:])):
            return False
    else:
        name, colon, port = value.partition(":")
        if colon and not _is_port(port):
            return False
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


class Forwarder:
    """The request handler of one proxy: one upstream, one connection pool.

    Args:
        upstream: base URL of the server, e.g. ``http://127.0.0.1:11434``.
        server: the ``server`` label of its records (``ollama@127.0.0.1:11434``).
        session: the pooled upstream client (owned by the caller).
        publish: receives each finished request's record (called on the proxy's loop).
        options: timeouts and opt-ins.
        check_host: refuse requests whose ``Host`` is not a loopback name (set when the
            proxy listens on loopback).
    """

    def __init__(self, upstream: str, server: str, session: aiohttp.ClientSession,
                 publish: Callable[[list[Record]], None], options: ForwardOptions,
                 check_host: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.check_host = check_host
        self.server = server
        self.session = session
        self.publish = publish
        self.options = options
        self.active = 0
        self.stopping = False
        self._timeout = aiohttp.ClientTimeout(total=None, connect=options.connect_timeout,
                                              sock_connect=options.connect_timeout,
                                              sock_read=options.read_timeout)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        t0 = time.perf_counter()
        path = request.path
        record = None
        progress = Progress()
        if is_metered(path):
            record = RequestRecord(ts_start=time.time(), server=self.server, endpoint=path,
                                   method=request.method, client=request.remote or "")
            self.active += 1
        try:
            if self.check_host and not is_loopback_host(request.headers.get("Host")):
                return await self._refuse_host(request, record)
            return await self._forward(request, record, t0, progress)
        except asyncio.CancelledError:
            self._cancelled(record, progress)
            raise
        except Exception as exc:  # a bug must cost this request only, never the proxy
            return self._internal_error(request, record, exc)
        finally:
            if record is not None:
                self.active -= 1
                self._finish(record, t0)

    async def _refuse_host(self, request: web.BaseRequest, record: RequestRecord | None) -> web.Response:
        host = request.headers.get("Host", "")
        log_once(log, "forward.host", "%s: refused a request for Host %.100r "
                 "(DNS-rebinding protection: the proxy listens on loopback)", self.server, host,
                 level=logging.WARNING)
        message = (f"llmmon proxy: Host {host[:100]!r} is not allowed; this proxy listens on loopback "
                   "and answers only requests for localhost, 127.0.0.1 or [::1]")
        if record is not None:
            record.status, record.error_type, record.error = 403, "forbidden_host", message
        return await self._send_and_hang_up(request, web.Response(
            status=403, body=error_body(request.path, message, "forbidden_host", 403),
            content_type="application/json"))

    @staticmethod
    async def _send_and_hang_up(request: web.BaseRequest, response: web.Response) -> web.Response:
        """Send a refusal now and close: aiohttp would otherwise linger for seconds reading
        the body nobody will use (a slow client holding the connection open)."""
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            pass  # the client is gone as well
        if request.transport is not None:
            request.transport.close()
        return response

    def _internal_error(self, request: web.BaseRequest, record: RequestRecord | None,
                        exc: Exception) -> web.Response:
        log_once(log, f"forward.{type(exc).__name__}", "%s %s: the proxy failed on this request",
                 self.server, request.path, exc_info=True)
        message = f"llmmon proxy: internal error ({type(exc).__name__}: {exc})"[:ERROR_TEXT_CAP]
        sent = request.writer.output_size > 0 if request.writer is not None else False
        if record is not None:
            record.error_type, record.error = "internal_error", message
            if not sent:
                record.status = 500
        if sent:  # the client has a status already: cut it off so the body is seen incomplete
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        return web.Response(status=500, body=error_body(request.path, message, "internal_error", 500),
                            content_type="application/json")

    def _finish(self, record: RequestRecord, t0: float) -> None:
        """Fill in what no meter did (no answer came) and publish the record."""
        if record.latency_s is None:
            record.latency_s = time.perf_counter() - t0
        if record.status >= 400 and not record.error_type:
            record.error_type = "http"
        try:
            self.publish([record])
        except Exception:  # a broken consumer must never break the proxy
            log.exception("publishing a request record failed")

    async def _forward(self, request: web.BaseRequest, record: RequestRecord | None,
                       t0: float, progress: Progress) -> web.StreamResponse:
        opts = self.options
        keep = opts.content_max_chars if opts.store_content else 0
        try:
            info, data = await self._read_body(request, record, keep)
        except TimeoutError:
            response = await self._fail(request, record, 408, "timeout",
                                        f"llmmon proxy: the request body took over {opts.body_timeout:g} s")
            return await self._send_and_hang_up(request, response)
        except asyncio.IncompleteReadError:
            if record is not None:  # the client left half-way through its body
                record.error_type, record.error = "cancelled", "client left while sending its body"
            return web.Response(status=400)
        if record is not None:
            record.model = info.model
            record.stream = bool(info.stream)
            record.prompt_text = info.prompt_text
        url = URL(self.upstream + request.raw_path, encoded=True)
        headers = forward_headers(request.headers, drop_length=isinstance(data, bytes))
        attempts = STALE_RETRIES + 1 if not hasattr(data, "__aiter__") else 1  # a stream can't be re-sent
        for attempt in range(attempts):
            try:
                upstream_cm = self.session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False,
                    timeout=self._timeout, auto_decompress=False)
                upstream = await upstream_cm.__aenter__()
                break
            except aiohttp.ClientConnectorError as exc:
                why = exc.os_error.strerror or exc
                return await self._fail(request, record, 502, "upstream_down",
                                        f"llmmon proxy: {self.upstream} is not reachable ({why})")
            except TimeoutError:
                return await self._fail(request, record, 504, "timeout",
                                        f"llmmon proxy: no answer from {self.upstream} within {opts.read_timeout:g} s")
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # Before any answer: most likely a pooled keep-alive connection the server had
                # just closed; it did not see the request, so sending it again is safe.
                if attempt + 1 < attempts:
                    log.debug("%s: retrying on another connection (%s)", self.server, exc)
                    continue
                return await self._fail(request, record, 502, "upstream_disconnect",
                                        f"llmmon proxy: {self.upstream} closed the connection ({exc})")
            except aiohttp.ClientError as exc:
                return await self._fail(request, record, 502, "upstream_disconnect",
                                        f"llmmon proxy: {self.upstream} closed the connection ({exc})")
        try:
            return await self._relay(request, upstream, record, info, t0, keep, progress)
        finally:
            await upstream_cm.__aexit__(None, None, None)

    async def _relay(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
                     record: RequestRecord | None, info: BodyInfo, t0: float,
                     keep: int, progress: Progress) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=forward_headers(upstream.headers))
        meter = None
        if record is not None:
            record.status = upstream.status
            meter = Meter(record, t0, upstream.headers.get("Content-Type", ""),
                          upstream.headers.get("Content-Encoding", ""), keep)
        strip = (UsageStripper() if info.usage_added and meter is not None and meter.framing == "sse"
                 else None)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if meter is not None:
                    meter.feed(chunk, time.perf_counter())
                if strip is not None:
                    chunk = strip.feed(chunk)
                    if not chunk:
                        continue
                await response.write(chunk)
                progress.answered = meter is not None and meter.ended
            if strip is not None:
                await response.write(strip.flush())
            progress.answered = True  # all the upstream sent is with the client
            await response.write_eof()
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            self._cut(request, record, "upstream_disconnect", f"upstream closed mid-answer ({exc})")
        except TimeoutError:
            self._cut(request, record, "timeout",
                      f"upstream silent for {self.options.read_timeout:g} s mid-answer")
        except ConnectionError:  # writing to a client that has gone away
            self._cancelled(record, progress)
        except aiohttp.ClientError as exc:  # any other failure reading the upstream
            self._cut(request, record, "upstream_disconnect", f"upstream failed mid-answer ({exc})")
        except Exception as exc:  # a bug: this request ends, the proxy goes on
            log_once(log, f"relay.{type(exc).__name__}", "%s %s: the proxy failed mid-answer",
                     self.server, request.path, exc_info=True)
            self._cut(request, record, "internal_error",
                      f"llmmon proxy: internal error ({type(exc).__name__}: {exc})"[:ERROR_TEXT_CAP])
        finally:
            if meter is not None:
                meter.finish(time.perf_counter())
        return response

    def _cancelled(self, record: RequestRecord | None, progress: Progress) -> None:
        if record is not None and not record.error_type and not progress.answered:
            record.error_type = "cancelled"
            record.error = "proxy stopped" if self.stopping else "client disconnected"

    def _cut(self, request: web.BaseRequest, record: RequestRecord | None, kind: str, text: str) -> None:
        """The upstream failed after the client got headers: cut the client's connection so
        it sees an incomplete body (a clean end would pass the stream off as complete)."""
        if record is not None:
            record.error_type, record.error = kind, text
        log.info("%s %s: %s", self.server, request.path, text)
        if request.transport is not None:
            request.transport.abort()

    async def _fail(self, request: web.BaseRequest, record: RequestRecord | None, status: int,
                    kind: str, message: str) -> web.Response:
        log.warning("%s %s: %s", self.server, request.path, message)
        if record is not None:
            record.status, record.error_type, record.error = status, kind, message
        return web.Response(status=status, body=error_body(request.path, message, kind, status),
                            content_type="application/json")

    async def _read_body(self, request: web.BaseRequest, record: RequestRecord | None,
                         keep: int) -> tuple[BodyInfo, bytes | AsyncIterator[bytes] | None]:
        """Small bodies are read at once (and inspected); big or chunked ones are streamed
        to the upstream as they arrive, so a 50 MB upload never sits in memory."""
        if not request.body_exists:
            return BodyInfo(b""), None
        length = request.content_length
        if length is not None and length <= READ_WHOLE_BODY:
            async with asyncio.timeout(self.options.body_timeout):
                body = await request.content.readexactly(length) if length else b""
            if record is not None:
                record.bytes_in = len(body)
                info = inspect_body(body, request.path, add_usage=self.options.include_usage,
                                    keep_text=keep)
                return info, info.body
            return BodyInfo(body), body
        return BodyInfo(b""), self._stream_body(request, record)

    async def _stream_body(self, request: web.BaseRequest,
                           record: RequestRecord | None) -> AsyncIterator[bytes]:
        while True:
            async with asyncio.timeout(self.options.body_timeout):
                chunk = await request.content.read(BODY_CHUNK)
            if not chunk:
                return
            if record is not None:
                record.bytes_in += len(chunk)
            yield chunk
