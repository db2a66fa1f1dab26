"""Notifications: what alert transitions become, and the sinks that deliver them.

The :class:`Notifier` listens to the alert engine. It drops transitions nobody needs to hear
about (pending, acknowledged, snoozed), and sends **at most one notification per
``group_seconds``**: the first transition after a quiet spell goes out at once, everything
that arrives meanwhile is grouped into the next one ("3 firing, 1 resolved"). Together with
each rule's cooldown this makes notification storms impossible, however many rules trip.

Sinks (glances-style, one small class each). Local sinks are called on the notifier's own
thread; each remote sink has its own thread and queue, so a slow webhook never delays the
desktop or the tray:

* :class:`DesktopSink` — a native notification over D-Bus (``org.freedesktop.Notifications``)
  with ``jeepney``, no Qt. Reports itself unavailable when there is no session bus or no
  notification daemon; the tray sink (``widgets/tray.py``, the only Qt sink) is then used.
* :class:`WebhookSink` — a POST of generic JSON, or a Slack-compatible ``{"text": ...}``, with
  one deadline for the whole delivery. The URL lives in the OS keyring only
  (``app/secrets.py``) and is scrubbed from log records.

Local sinks (desktop, tray) are alternatives — the first available one shows the
notification; remote sinks (webhook) all get it.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

try:  # D-Bus exists on Linux and the BSDs only
    from jeepney import DBusAddress, new_method_call
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg
except ImportError:  # pragma: no cover - not on Linux
    DBusAddress = None

from app.alerts.rules import NotifySettings
from app.alerts.transition import Transition
from app.records import AlertEvent
from app.secrets import get_secret, keyring_status

log = logging.getLogger(__name__)

WEBHOOK_SECRET = "webhook_url"
LOCAL_ORDER = ("desktop", "tray")   # alternatives, best first
MAX_LINES = 8                       # lines of a grouped notification before "and N more"
_RANK = {"info": 1, "warning": 2, "critical": 3}


@dataclass(frozen=True)
class Notification:
    """One message to the user, covering one or more alert transitions."""

    title: str
    body: str
    severity: str                   # the worst severity among firing alerts ("info" if none)
    events: tuple[AlertEvent, ...]
    ts: float

    @property
    def firing(self) -> int:
        return sum(e.state == "firing" for e in self.events)


@dataclass(frozen=True)
class Delivery:
    """Which sinks a notification reached."""

    notification: Notification
    delivered: tuple[str, ...]     # sink kinds, e.g. ("tray", "webhook")
    failed: tuple[str, ...]


def _said(t: Transition) -> str:
    """What one transition tells the user: its sentence, and for a firing alert what to do."""
    hint = t.hint if t.event.state == "firing" else ""
    return f"{t.event.message}\n{hint}" if hint else t.event.message


def compose(transitions: list[Transition], now: float) -> Notification:
    """The notification for a group of transitions (firing and resolved): the rule's title,
    the alert's sentence and, while firing, the rule's hint."""
    firing = [t for t in transitions if t.event.state == "firing"]
    resolved = [t for t in transitions if t.event.state != "firing"]
    severity = max((t.event.severity for t in firing), key=_RANK.__getitem__, default="info")
    events = tuple(t.event for t in transitions)
    if len(transitions) == 1:
        t = transitions[0]
        title = f"{t.event.severity.upper()}: {t.title}" if firing else f"Resolved: {t.title}"
        return Notification(title, _said(t), severity, events, now)
    counts = [f"{len(firing)} firing"] if firing else []
    counts += [f"{len(resolved)} resolved"] if resolved else []
    lines = [(f"{t.event.severity.upper()} {t.title}" if t.event.state == "firing" else f"Resolved: {t.title}")
             + f": {_said(t)}"
             for t in firing + resolved]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"… and {len(lines) - MAX_LINES + 1} more"]
    return Notification(f"llmmon alerts: {', '.join(counts)}", "\n".join(lines), severity, events, now)


# ---------------------------------------------------------------------------- sinks
class Sink(ABC):
    """A way to tell the user. A local sink's ``send`` runs on the notifier thread and must be
    quick; a remote sink's runs on its own lane and must end by its own deadline."""

    kind = ""

    @abstractmethod
    def status(self) -> tuple[bool, str]:
        """``(available, description)`` — shown in the Alerts tab."""

    @abstractmethod
    def send(self, notification: Notification) -> bool:
        """Deliver; True when delivered. Failures are logged, never raised."""


NOTIFICATIONS = DBusAddress("/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
                            interface="org.freedesktop.Notifications") if DBusAddress else None
_URGENCY = {"info": 0, "warning": 1, "critical": 2}


class DesktopSink(Sink):
    """Native desktop notifications over the D-Bus session bus.

    Args:
        bus: ``"SESSION"`` (from ``$DBUS_SESSION_BUS_ADDRESS``) or a D-Bus address.
        timeout: seconds to wait for the bus or the daemon.
        recheck_s: how long a probe's answer is trusted (a daemon may start later).
    """

    kind = "desktop"

    def __init__(self, bus: str = "SESSION", timeout: float = 3.0, recheck_s: float = 10.0) -> None:
        self.bus = bus
        self.timeout = timeout
        self.recheck_s = recheck_s
        self._status: tuple[float, tuple[bool, str]] | None = None

    def status(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._status is None or now - self._status[0] >= self.recheck_s:
            self._status = (now, self._probe())
        return self._status[1]

    def _probe(self) -> tuple[bool, str]:
        if NOTIFICATIONS is None:
            return False, "desktop notifications need D-Bus (Linux)"
        try:
            with open_dbus_connection(bus=self.bus, auth_timeout=self.timeout) as conn:
                name = NOTIFICATIONS.bus_name
                if unwrap_msg(conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=self.timeout))[0]:
                    info = unwrap_msg(conn.send_and_get_reply(
                        new_method_call(NOTIFICATIONS, "GetServerInformation"), timeout=self.timeout))
                    return True, f"desktop notifications via {info[0]}"
                # Not "activatable" names: an installed daemon that cannot start (no display)
                # would swallow every notification.
                return False, "no notification daemon is running on the D-Bus session bus"
        except KeyError:  # jeepney looks up $DBUS_SESSION_BUS_ADDRESS
            return False, "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
        except Exception as exc:  # socket gone, auth refused, timeout...
            return False, f"no D-Bus session bus ({type(exc).__name__}: {exc})"

    def send(self, notification: Notification) -> bool:
        if not self.status()[0]:
            return False
        hints = {"urgency": ("y", _URGENCY.get(notification.severity, 1))}
        message = new_method_call(NOTIFICATIONS, "Notify", "susssasa{sv}i", (
            "llmmon", 0, "dialog-warning" if notification.firing else "dialog-information",
            notification.title, notification.body, [], hints, -1))
        try:
            with open_dbus_connection(bus=self.bus, auth_timeout=self.timeout) as conn:
                unwrap_msg(conn.send_and_get_reply(message, timeout=self.timeout))
            return True
        except Exception as exc:
            self._status = None  # probe again next time
            log.warning("desktop notification failed: %s: %s", type(exc).__name__, exc)
            return False


class _Redactor(logging.Filter):
    """Replaces known secret texts in log records (httpx logs every request's full URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        self.secrets |= {secret, str(httpx.URL(secret))}

    def scrub(self, text: str) -> str:
        # Longest first: an older URL that is the start of the current one ("…/hook" before
        # "…/hooks/T0K3N") must not cut it and leave its secret part in the log.
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "<webhook URL>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            clean = self.scrub(text)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


_redactor = _Redactor()
logging.getLogger("httpx").addFilter(_redactor)


class WebhookSink(Sink):
    """POSTs notifications to the URL kept in the keyring under ``webhook_url``.

    Args:
        format: ``"json"`` (llmmon's generic payload) or ``"slack"`` (``{"text": ...}``,
            also understood by Mattermost, Rocket.Chat and Discord's ``/slack`` endpoints).
        timeout: seconds for the whole delivery (connecting, sending, the full answer).
    """

    kind = "webhook"

    def __init__(self, format: str = "json", timeout: float = 5.0, secret_name: str = WEBHOOK_SECRET) -> None:
        self.format = format
        self.timeout = timeout
        self.secret_name = secret_name

    def status(self) -> tuple[bool, str]:
        available, why = keyring_status()
        if not available:
            return False, why
        if not get_secret(self.secret_name):
            return False, "no webhook URL set"
        return True, f"webhook ({self.format}) set in the keyring"

    def payload(self, notification: Notification) -> dict[str, object]:
        if self.format == "slack":
            return {"text": f"*{notification.title}*\n{notification.body}"}
        return {
            "source": "llmmon", "host": socket.gethostname(), "title": notification.title,
            "text": notification.body, "severity": notification.severity, "ts": notification.ts,
            "alerts": [{"rule": e.rule, "state": e.state, "severity": e.severity, "ts": e.ts,
                        "labels": dict(e.labels), "value": e.value, "message": e.message}
                       for e in notification.events],
        }

    def send(self, notification: Notification) -> bool:
        url = get_secret(self.secret_name)
        if not url:
            return False
        _redactor.add(url)
        try:
            status = asyncio.run(self._post(url, self.payload(notification)))
        except TimeoutError:
            log.warning("webhook failed: no complete answer within its %g s deadline", self.timeout)
            return False
        except Exception as exc:  # invalid URL, refused, cut off: say what, never where
            log.warning("webhook failed: %s: %s", type(exc).__name__, _redactor.scrub(str(exc)))
            return False
        if not 200 <= status < 300:
            log.warning("webhook answered HTTP %d", status)
            return False
        return True

    async def _post(self, url: str, payload: dict[str, object]) -> int:
        # One deadline for the whole delivery: httpx's own timeouts are per operation, so a
        # server trickling a byte every few seconds would never trip them.
        async with asyncio.timeout(self.timeout), httpx.AsyncClient(timeout=self.timeout) as client:
            return (await client.post(url, json=payload)).status_code


# ---------------------------------------------------------------------------- notifier
REMOTE_QUEUE = 100   # notifications a remote sink may fall behind by before the oldest are dropped


class _FailureLog:
    """Logs a failure with its traceback the first time per (what, kind of error); repeats go
    to DEBUG, so a sink that fails on every notification does not flood the log."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def failed(self, what: str, exc: BaseException) -> None:
        key = (what, type(exc).__name__)
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
        if first:
            log.error("%s failed: %s: %s (logged once for this kind of error)", what, type(exc).__name__,
                      _redactor.scrub(str(exc)), exc_info=exc)
        else:
            log.debug("%s failed again: %s", what, type(exc).__name__)


class _Lane:
    """A remote sink's own thread and queue: a webhook that is slow (or never answers) holds up
    only its own later notifications, never the desktop, the tray or the engine. When
    ``size`` are waiting, the oldest is dropped, counted and logged."""

    def __init__(self, sink: Sink, send: Callable[[Sink, Notification], bool],
                 done: Callable[[int, str, bool], None], size: int) -> None:
        self.sink = sink
        self.dropped = 0
        self._send = send
        self._done = done
        self._waiting: deque[tuple[int, Notification]] = deque()
        self._size = size
        self._stopping = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"llmmon-notify-{sink.kind}", daemon=True)
        self._thread.start()

    def put(self, seq: int, notification: Notification) -> None:
        dropped = None
        with self._wake:
            if len(self._waiting) >= self._size:
                dropped = self._waiting.popleft()
                self.dropped += 1
            self._waiting.append((seq, notification))
            self._wake.notify()
        if dropped is not None:
            log.warning("%s sink: %d notifications waiting, dropped the oldest (%r); %d dropped so far",
                        self.sink.kind, self._size, dropped[1].title, self.dropped)
            self._done(dropped[0], self.sink.kind, False)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._stopping:
                    self._wake.wait()
                if not self._waiting:
                    return
                seq, notification = self._waiting.popleft()
            self._done(seq, self.sink.kind, self._send(self.sink, notification))

    def stop(self, timeout: float) -> None:
        """Deliver what is waiting (each within the sink's own deadline), then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)


@dataclass
class _Outcome:
    """One notification's delivery while its remote sinks are still at it."""

    notification: Notification
    delivered: list[str]
    failed: list[str]
    remote: list[str]            # the remote sinks' kinds, in sink order
    results: dict[str, bool]     # kind -> delivered, as the lanes report


class Notifier:
    """Turns alert transitions into grouped notifications and delivers them.

    The notifier's thread shows each notification on the first available local sink (desktop
    or tray: quick, local) and hands it to each remote sink's own lane (thread and queue).
    A failing sink or notification is logged (once per kind of error) and never stops either.

    Args:
        sinks: where notifications can go (the tray sink is added by the GUI).
        settings: which sinks are switched on, and the grouping interval.
        clock: UTC epoch seconds (only used when ``submit`` is not given ``now``).
        remote_queue: how many notifications a remote sink may fall behind by.
    """

    def __init__(self, sinks: list[Sink], settings: NotifySettings | None = None,
                 clock: Callable[[], float] = time.time, remote_queue: int = REMOTE_QUEUE) -> None:
        self.sinks = list(sinks)
        self.settings = settings or NotifySettings()
        self.clock = clock
        self.remote_queue = remote_queue
        self.sent: deque[Notification] = deque(maxlen=200)      # what was decided, newest last
        self.deliveries: deque[Delivery] = deque(maxlen=200)    # what reached which sink, once all answered
        self._waiting: list[Transition] = []
        self._next_at = float("-inf")
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[Notification | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        self._lanes: dict[int, _Lane] = {}           # id(sink) -> its lane
        self._outcomes: dict[int, _Outcome] = {}     # notification number -> its delivery so far
        self._seq = itertools.count()
        self._failures = _FailureLog()

    def configure(self, settings: NotifySettings) -> None:
        self.settings = settings
        for sink in self.sinks:
            if isinstance(sink, WebhookSink) and settings.webhook != "off":
                sink.format = settings.webhook

    def add_sink(self, sink: Sink) -> None:
        self.sinks = [*self.sinks, sink]

    def enabled(self, sink: Sink) -> bool:
        return {"desktop": self.settings.desktop, "tray": self.settings.tray,
                "webhook": self.settings.webhook != "off"}.get(sink.kind, True)

    def dropped(self, sink: Sink) -> int:
        """How many notifications ``sink`` lost because it fell too far behind."""
        lane = self._lanes.get(id(sink))
        return lane.dropped if lane is not None else 0

    # ------------------------------------------------------------------ deciding
    def submit(self, transitions: list[Transition], now: float | None = None) -> None:
        """Take the engine's transitions (an engine listener); send when the group is due."""
        now = self.clock() if now is None else now
        with self._lock:
            self._waiting.extend(t for t in transitions if t.notify)
            if not self._waiting or now < self._next_at:
                return
            group, self._waiting = self._waiting, []
            self._next_at = now + self.settings.group_seconds
            try:
                notification = compose(group, now)
            except Exception as exc:  # never let one odd transition block every later one
                self._failures.failed("composing a notification", exc)
                return
            self.sent.append(notification)
        log.info("notification: %s", notification.title)
        self._outbox.put(notification)

    # ------------------------------------------------------------------ delivering
    def deliver(self, notification: Notification) -> None:
        """Show on the first available local sink now; queue for every remote sink. The
        :class:`Delivery` is added to :attr:`deliveries` once every sink has answered."""
        delivered: list[str] = []
        failed: list[str] = []
        local = sorted((s for s in self.sinks if s.kind in LOCAL_ORDER and self.enabled(s)),
                       key=lambda s: LOCAL_ORDER.index(s.kind))
        remote = [s for s in self.sinks if s.kind not in LOCAL_ORDER and self.enabled(s)]
        for sink in local:
            if self._send(sink, notification):
                delivered.append(sink.kind)
                break
            failed.append(sink.kind)
        seq = next(self._seq)
        with self._lock:
            self._outcomes[seq] = _Outcome(notification, delivered, failed, [s.kind for s in remote], {})
        if not remote:
            self._finish(seq)
        for sink in remote:
            self._lane(sink).put(seq, notification)

    def _lane(self, sink: Sink) -> _Lane:
        with self._lock:
            lane = self._lanes.get(id(sink))
            if lane is None:
                lane = self._lanes[id(sink)] = _Lane(sink, self._send, self._remote_done, self.remote_queue)
            return lane

    def _remote_done(self, seq: int, kind: str, ok: bool) -> None:
        with self._lock:
            outcome = self._outcomes.get(seq)
            if outcome is None:
                return
            outcome.results[kind] = ok
        self._finish(seq)

    def _finish(self, seq: int) -> None:
        with self._lock:
            outcome = self._outcomes[seq]
            if len(outcome.results) < len(outcome.remote):
                return
            del self._outcomes[seq]
        delivered = [*outcome.delivered, *(k for k in outcome.remote if outcome.results[k])]
        failed = [*outcome.failed, *(k for k in outcome.remote if not outcome.results[k])]
        self.deliveries.append(Delivery(outcome.notification, tuple(delivered), tuple(failed)))

    def _send(self, sink: Sink, notification: Notification) -> bool:
        try:
            return sink.send(notification)
        except Exception as exc:
            self._failures.failed(f"notification sink {sink.kind}", exc)
            return False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmmon-notify", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (item := self._outbox.get()) is not None:
            try:
                self.deliver(item)
            except Exception as exc:  # the thread outlives any one notification
                self._failures.failed("delivering a notification", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (remote sinks within their deadlines), then stop the threads."""
        if self._thread is not None:
            self._outbox.put(None)
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.stop(timeout)


def build_notifier(settings: NotifySettings, clock: Callable[[], float] = time.time) -> Notifier:
    """The app's notifier: desktop and webhook sinks (the GUI adds the tray)."""
    notifier = Notifier([DesktopSink(), WebhookSink()], settings, clock)
    notifier.configure(settings)
    return notifier
