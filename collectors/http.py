"""What the collectors of HTTP servers (Ollama, vLLM, OpenAI-compatible, llama.cpp) share.

- :class:`HttpSource`: one server's base URL behind an ``httpx`` client with short timeouts,
  a hard deadline and size cap per answer (a server that trickles bytes or sends gigabytes
  cannot stall a collector), and the optional bearer API key. Every failure becomes a
  :class:`SourceError` whose ``reason`` a user understands: "connection refused on :11434",
  "timed out after 2 s", "HTTP 500: engine dead", "not an Ollama server (HTML page)".
- :class:`ServerAnswers`: a server's answers while discovery identifies it, each path fetched
  once however many kinds' probes (:meth:`ServerCollector.recognise`) read it.
- :class:`ServerCollector`: the poll skeleton of one server: health with version and latency,
  ``llm_poll_latency_seconds``, ``llm_models_loaded`` / ``llm_model_loaded`` and the
  ``model_loaded`` / ``model_unloaded`` events when the set of loaded models changes.

Emits (every server kind): ``llm_models_loaded{server}``, ``llm_model_loaded{server,model}``
(1 for each model loaded at that poll), ``llm_poll_latency_seconds{server}``.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.collector import Collector
from app.records import Event, Health, HealthState, Record, Sample, labels_of
from app.server_names import host_port, server_name

log = logging.getLogger(__name__)

__all__ = ["SourceError", "Answer", "HttpSource", "ServerAnswers", "ServerCollector", "server_name", "host_port",
           "is_loopback", "list_field"]

DEFAULT_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 16 * 1024 * 1024  # a /metrics page is ~50 kB; anything near this is wrong


class SourceError(Exception):
    """A poll that got no usable answer. ``state`` is DOWN (unreachable) or ERROR (answered
    with something unusable); ``reason`` is the sentence shown to the user."""

    def __init__(self, state: HealthState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def looks_like_html(self) -> bool:
        return "html" in self.content_type or self.body.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_message(answer: Answer) -> str:
    """The server's own words from an error body (JSON ``error``/``message``/``detail``)."""
    if answer.looks_like_html:
        return "HTML error page"
    try:
        payload = json.loads(answer.body)
    except ValueError:
        first = answer.text.strip().splitlines()
        return first[0][:160] if first else ""
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", "")
        if isinstance(error, str):
            return error[:160]
    return ""


class HttpSource:
    """GETs against one server, each bounded by ``timeout`` seconds in total.

    Args:
        base_url: e.g. ``"http://127.0.0.1:11434"``.
        timeout: seconds for connecting and for the whole answer.
        api_key: sent as ``Authorization: Bearer``; never logged.
        what: how the user would name this server, for "not <what> (HTML page)".
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT_S, api_key: str | None = None,
                 what: str = "an LLM server", max_bytes: int = MAX_BODY_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.what = what
        self.max_bytes = max_bytes
        host, self.port = host_port(self.base_url)
        headers = {"Accept": "application/json, text/plain;q=0.9, */*;q=0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Proxy variables are for reaching the internet; a local server must be reached directly.
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                   follow_redirects=False, trust_env=not is_loopback(host))

    def get(self, path: str) -> Answer:
        """One GET; transport failures raise :class:`SourceError` (DOWN), HTTP errors do not."""
        deadline = time.monotonic() + self.timeout
        try:
            with self.client.stream("GET", path) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise SourceError(HealthState.ERROR, f"{path} answered more than "
                                                             f"{self.max_bytes // 2**20} MB")
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("answer too slow")
                return Answer(response.status_code, response.headers.get("content-type", ""), bytes(body))
        except httpx.TimeoutException:
            raise SourceError(HealthState.DOWN, f"timed out after {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            text = str(exc).lower()
            if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
                reason = f"cannot resolve host {host_port(self.base_url)[0]}"
            else:
                reason = f"connection refused on :{self.port}"
            raise SourceError(HealthState.DOWN, reason) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            raise SourceError(HealthState.DOWN, f"connection dropped by the server mid-answer ({path})") from None
        except httpx.HTTPError as exc:
            raise SourceError(HealthState.DOWN, f"{type(exc).__name__}: {exc}"[:200]) from None

    def get_ok(self, path: str) -> Answer:
        """A GET that must answer 2xx; other statuses raise ERROR "HTTP 500: <server's words>"."""
        answer = self.get(path)
        if answer.status >= 400 or answer.status < 200:
            message = _error_message(answer)
            hint = " (check the API key)" if answer.status in (401, 403) else ""
            raise SourceError(HealthState.ERROR, f"HTTP {answer.status}{': ' + message if message else ''}{hint}")
        return answer

    def get_json(self, path: str) -> object:
        """A 2xx JSON answer, parsed. HTML or broken JSON raise ERROR naming what was wrong."""
        answer = self.get_ok(path)
        if answer.looks_like_html:
            raise SourceError(HealthState.ERROR, f"not {self.what} (HTML page at {path})")
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            what = "truncated JSON" if answer.body.strip()[:1] in (b"{", b"[") else "not JSON"
            raise SourceError(HealthState.ERROR, f"not {self.what} ({path}: {what}, {exc})"[:200]) from None

    def close(self) -> None:
        self.client.close()


class ServerAnswers:
    """What a server answers while discovery works out its kind: every kind's probe may ask for
    the same path (``/metrics``), the server is asked once. Unreachable servers raise
    :class:`SourceError` from the first request, which ends the probing."""

    def __init__(self, source: HttpSource) -> None:
        self.source = source
        self._answers: dict[str, Answer] = {}

    def get(self, path: str) -> Answer:
        if path not in self._answers:
            self._answers[path] = self.source.get(path)
        return self._answers[path]

    def json(self, path: str) -> object | None:
        """The JSON of a 200 answer at ``path``; ``None`` for any other answer."""
        answer = self.get(path)
        if answer.status != 200 or answer.looks_like_html:
            return None
        try:
            parsed: object = json.loads(answer.body)
        except ValueError:
            return None
        return parsed

    def text(self, path: str) -> str:
        """The text of a 200 answer at ``path`` that is not an HTML page; ``""`` otherwise."""
        answer = self.get(path)
        return answer.text if answer.status == 200 and not answer.looks_like_html else ""


def list_field(payload: object, key: str, what: str, path: str) -> list[Any]:
    """``payload[key]`` when payload is an object holding a list there, else ERROR."""
    value = payload.get(key) if isinstance(payload, dict) else None
    if isinstance(value, list):
        return value
    raise SourceError(HealthState.ERROR, f"not {what} ({path} has no '{key}' list)")


class ServerCollector(Collector):
    """Base of the per-server collectors: subclasses implement :meth:`read`.

    Args:
        base_url: the server, e.g. ``"http://127.0.0.1:11434"``.
        name: the ``server`` label, the server's identity (default ``<kind>@<host>:<port>``;
            see :mod:`app.server_names`).
        interval: seconds between polls.
        api_key: bearer key (from the keyring; never stored or logged).
        timeout: seconds allowed per request.
    """

    what = "an LLM server"
    max_backoff = 10.0  # a server that comes back should be seen within seconds

    @classmethod
    def recognise(cls, answers: ServerAnswers) -> bool:
        """Whether the server behind ``answers`` is of this collector's kind (discovery asks the
        kinds in the order of :data:`app.server_kinds.KINDS`; the first yes wins)."""
        return False

    def __init__(self, base_url: str, name: str = "", interval: float = 1.0, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name or server_name(self.kind, self.base_url)
        self.interval = interval
        self.clock = clock
        self.version = ""
        self.source = HttpSource(self.base_url, timeout=timeout, api_key=api_key, what=self.what)
        self._loaded: set[str] | None = None  # None until the first successful poll

    @abstractmethod
    def read(self, now: float) -> list[Record]:
        """Read the server once; raise :class:`SourceError` when it cannot be used."""

    def poll(self) -> list[Record]:
        now = self.clock()
        started = time.perf_counter()
        try:
            records = self.read(now)
        except SourceError as exc:
            return [self.health(now, exc.state, exc.reason, time.perf_counter() - started)]
        latency = time.perf_counter() - started
        records.append(Sample("llm_poll_latency_seconds", latency, now, labels_of(server=self.name)))
        records.append(self.health(now, HealthState.UP, "", latency))
        return records

    def health(self, now: float, state: HealthState, reason: str, latency: float) -> Health:
        return Health(self.name, state, now, reason=reason, kind=self.kind, url=self.base_url,
                      version=self.version, latency_s=latency)

    def models_loaded(self, now: float, models: dict[str, str]) -> list[Record]:
        """Samples for the loaded models (``name → description`` for the event text) and the
        load/unload events since the previous poll (none on the first poll: the models were
        already there)."""
        server = labels_of(server=self.name)
        out: list[Record] = [Sample("llm_models_loaded", float(len(models)), now, server)]
        out += [Sample("llm_model_loaded", 1.0, now, labels_of(server=self.name, model=m)) for m in models]
        current = set(models)
        if self._loaded is not None:
            for model in sorted(current - self._loaded):
                text = f"{model} loaded on {self.name}" + (f" ({models[model]})" if models[model] else "")
                out.append(Event("model_loaded", self.name, text, now, labels_of(server=self.name, model=model)))
            for model in sorted(self._loaded - current):
                out.append(Event("model_unloaded", self.name, f"{model} unloaded from {self.name}", now,
                                 labels_of(server=self.name, model=model)))
        self._loaded = current
        return out

    def close(self) -> None:
        self.source.close()
