"""A small client of the Prometheus HTTP API for the Fleet tab: instant queries, range queries
and the alerts Prometheus has. ``httpx`` with a short timeout; every failure (down, slow,
refused credentials, not a Prometheus, an answer of the wrong shape) becomes one
:class:`PrometheusError` whose message is a sentence for the user.

The bearer token or basic-auth password comes from the OS keyring (``app/secrets.py``) and is
never logged or put in an error message.

``PrometheusClient("http://127.0.0.1:9090").query("up")`` gives values such as
``labels=(('instance', 'gpu-box-a'), ('job', 'llmmon')), value=1.0`` (tests/prometheus/ asks a
real Prometheus).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from app.config import PrometheusSource
from app.records import Labels, labels_of
from app.secrets import get_secret

log = logging.getLogger(__name__)


class PrometheusError(Exception):
    """Prometheus could not be asked, or its answer could not be used; says why in words."""


@dataclass(frozen=True, slots=True)
class Vector:
    """One series of an instant query's answer."""

    labels: Labels      # with ``__name__`` when the query kept it
    value: float

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series of a range query's answer, oldest first."""

    labels: Labels
    ts: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert Prometheus holds (pending or firing)."""

    name: str
    state: str
    labels: Labels      # without ``alertname``
    value: float | None
    active_at: str
    summary: str = ""
    description: str = ""

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


def _number(text: object) -> float:
    return float(str(text))  # Prometheus sends values as text: "0.5", "NaN", "+Inf"


def parse_vector(data: Any) -> list[Vector]:
    """The ``data`` of an instant query of type vector (a scalar gives one unlabelled value)."""
    try:
        if data["resultType"] == "scalar":
            return [Vector((), _number(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PrometheusError(f"expected a vector, got a {data['resultType']}")
        return [Vector(labels_of(r["metric"]), _number(r["value"][1])) for r in data["result"]]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise PrometheusError(f"unexpected answer to a query ({type(exc).__name__})") from None


def parse_matrix(data: Any) -> list[RangeSeries]:
    """The ``data`` of a range query."""
    try:
        if data["resultType"] != "matrix":
            raise PrometheusError(f"expected a matrix, got a {data['resultType']}")
        out = []
        for r in data["result"]:
            points = r["values"]
            ts = np.fromiter((float(p[0]) for p in points), np.float64, len(points))
            values = np.fromiter((_number(p[1]) for p in points), np.float64, len(points))
            out.append(RangeSeries(labels_of(r["metric"]), ts, values))
        return out
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise PrometheusError(f"unexpected answer to a range query ({type(exc).__name__})") from None


def parse_alerts(data: Any) -> list[Alert]:
    """The ``data`` of ``/api/v1/alerts``."""
    try:
        out = []
        for a in data["alerts"]:
            labels = {str(k): str(v) for k, v in a["labels"].items()}
            name = labels.pop("alertname", "")
            notes = a.get("annotations") or {}
            value = a.get("value")
            out.append(Alert(name, str(a["state"]), labels_of(labels), _number(value) if value is not None else None,
                             str(a.get("activeAt", "")), str(notes.get("summary", "")),
                             str(notes.get("description", ""))))
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PrometheusError(f"unexpected answer to the alerts query ({type(exc).__name__})") from None


class PrometheusClient:
    """Asks one Prometheus server. Thread-compatible: use it from one thread at a time.

    Args:
        url: e.g. ``http://prometheus.lan:9090``.
        username: with ``secret``: basic auth; without: ``secret`` is a bearer token.
        secret: the password or token (from the keyring), or None.
        timeout: seconds allowed for each request.
    """

    def __init__(self, url: str, *, username: str = "", secret: str | None = None, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        auth = httpx.BasicAuth(username, secret or "") if username else None
        headers = {"Authorization": f"Bearer {secret}"} if secret and not username else {}
        # Plain http has no TLS: skip loading a CA bundle (~100 ms of the tab's first answer).
        # An https URL is verified against the bundle as usual.
        self._http = httpx.Client(base_url=self.url, timeout=timeout, auth=auth, headers=headers,
                                  transport=transport, verify=self.url.startswith("https://"))

    @classmethod
    def for_source(cls, source: PrometheusSource) -> PrometheusClient:
        secret = get_secret(source.secret_ref) if source.secret_ref else None
        if source.secret_ref and secret is None:
            log.warning("prometheus %s: no secret %r in the keyring; asking without credentials",
                        source.url, source.secret_ref)
        return cls(source.url, username=source.username, secret=secret, timeout=source.timeout_s)

    def _post(self, path: str, params: dict[str, str]) -> Any:
        # POST (form-encoded): long PromQL fits where a URL might not; Prometheus accepts both.
        try:
            reply = self._http.post(path, data=params) if params else self._http.get(path)
        except httpx.TimeoutException:
            raise PrometheusError(f"no answer within {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise PrometheusError(f"cannot connect ({_reason(exc)})") from None
        except httpx.HTTPError as exc:
            raise PrometheusError(f"request failed ({_reason(exc)})") from None
        if reply.status_code in (401, 403):
            raise PrometheusError(f"refused the credentials (HTTP {reply.status_code}); set them with "
                                  "username/secret_ref in [[prometheus]]")
        try:
            body = reply.json()
        except ValueError:
            raise PrometheusError(f"answered HTTP {reply.status_code} with something that is not the "
                                  "Prometheus API (is this the right URL?)") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise PrometheusError(f"HTTP {reply.status_code}: {str(error)[:300] or 'the query failed'}")
        return body.get("data")

    def query(self, promql: str, at: float | None = None) -> list[Vector]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return parse_vector(self._post("/api/v1/query", params))

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[RangeSeries]:
        return parse_matrix(self._post("/api/v1/query_range", {
            "query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}))

    def alerts(self) -> list[Alert]:
        return parse_alerts(self._post("/api/v1/alerts", {}))

    def close(self) -> None:
        self._http.close()


def _reason(exc: Exception) -> str:
    """The last words of an httpx error (``[Errno 111] Connection refused`` → ``Connection refused``)."""
    text = str(exc) or type(exc).__name__
    return text.rsplit("] ", 1)[-1][:200]
