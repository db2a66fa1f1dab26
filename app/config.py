"""Where llmmon keeps its files, and the user's settings file.

Paths come from ``platformdirs`` so they follow each OS's conventions; the database path can be
overridden with ``--db`` or the ``LLMMON_DB`` environment variable, the config file with
``LLMMON_CONFIG``. Settings live in a TOML file the user can edit; secrets never do (they go
to the OS keyring, see ``app/secrets.py``).

A typo never stops the app. Every value is checked on its own into its typed, in-range form
(booleans are TOML booleans, numbers finite and bounded, URLs have a host and a port from 1 to
65535); a bad one keeps its default, a table of the wrong type (``general = 5``) is ignored as
a whole, and each gives a problem naming the key and its line::

    config.toml line 3: general.retention_days must be a number of days from 0 to 36,500
    (0 or "never": no limit), not true; using 30
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import platformdirs

from app.server_kinds import kind_ids
from app.toml_lines import Key, key_line, key_lines

log = logging.getLogger(__name__)

APP_NAME = "llmmon"
DB_ENV = "LLMMON_DB"
CONFIG_ENV = "LLMMON_CONFIG"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def db_path(override: str | os.PathLike[str] | None = None) -> Path:
    """The database file: ``--db`` first, then ``$LLMMON_DB``, then the user's data dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).expanduser()
    return data_dir() / "llmmon.db"


@dataclass
class ServerEntry:
    """A server the user added by hand (remote, or on a non-default port)."""

    url: str
    kind: str = "auto"          # "auto" (probe it) or an id of app/server_kinds.py: "ollama", "vllm"...
    name: str = ""
    api_key_ref: str = ""       # the keyring entry name, never the key itself


@dataclass
class ProxyRoute:
    """One metering proxy: clients talk to ``listen_host:listen_port``, it forwards to ``upstream``."""

    upstream: str
    listen_port: int
    listen_host: str = "127.0.0.1"   # another address only when the user writes one
    kind: str = "auto"
    name: str = ""
    enabled: bool = True             # false: kept in the file, not started


@dataclass
class ProxySettings:
    """``[proxy]``: off by default. Every server llmmon knows (configured or discovered) gets a
    proxy on its port + 1 (the next free port when that is taken); ``[[proxy.routes]]`` choose
    the address for their upstream (see ``app/proxy/group.py``)."""

    enabled: bool = False
    routes: list[ProxyRoute] = field(default_factory=list)
    routes_only: bool = False        # run only ``routes`` (``main.py proxy --upstream``); not in the file
    include_usage: bool = False      # add stream_options.include_usage to OpenAI streams
    store_content: bool = False      # keep prompt/response text in the database
    content_max_chars: int = 16_384  # cap on each stored text


DEFAULT_EXPORTER_PORT = 9787


@dataclass
class ExporterSettings:
    """``[exporter]``: the Prometheus ``/metrics`` endpoint (``app/exporter.py``). Off by
    default; listens on 127.0.0.1 unless ``listen`` names another address."""

    enabled: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_EXPORTER_PORT
    max_series_per_metric: int = 1000   # more label sets of one metric are dropped and counted


@dataclass
class PrometheusSource:
    """``[[prometheus]]``: a Prometheus server the Fleet tab reads. The bearer token or basic
    auth password is in the OS keyring under ``secret_ref``, never in the config file."""

    url: str
    name: str = ""
    username: str = ""        # with a password in the keyring: basic auth; without: bearer token
    secret_ref: str = ""
    timeout_s: float = 5.0


@dataclass
class Settings:
    """The user's settings, read from the TOML config file; every field has a safe default."""

    retention_days: float | None = 30.0
    retention_gb: float | None = None   # also keep the database under this many GB (1e9 bytes)
    system_interval_s: float = 1.0
    server_interval_s: float = 1.0      # how often each LLM server is polled
    servers: list[ServerEntry] = field(default_factory=list)
    discover_local: bool = True
    theme: str = "system"               # "system", "light" or "dark"
    proxy: ProxySettings = field(default_factory=ProxySettings)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    prometheus: list[PrometheusSource] = field(default_factory=list)


# ---------------------------------------------------------------------------- value checks
SERVER_KINDS = ("auto", *kind_ids())  # "auto": probe it; else a kind of app/server_kinds.py
THEMES = ("system", "light", "dark")
MAX_RETENTION_DAYS = 36_500          # a hundred years
MAX_RETENTION_GB = 1_000_000         # a petabyte
MAX_INTERVAL_S = 3600.0
MIN_INTERVAL_S = 0.25                # faster polling would cost more than it shows
MAX_CONTENT_CHARS = 10_000_000
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HOST = re.compile(r"[\w.-]+")       # a name or an IPv4 address (IPv6 is checked by ipaddress)


class Invalid(ValueError):
    """A setting's value cannot be used; the message says what it should be."""


Check = Callable[[object], object]


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid("must be true or false (without quotes)")


def number(low: float, high: float, unit: str = "") -> Check:
    """A finite int or float in ``[low, high]``, as a float."""
    def check(value: object) -> float:
        # Compared before any float(): a 400-digit integer is out of range, not an overflow.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise Invalid(f"must be a number from {low:g} to {high:g}{unit}")
        return float(value)
    return check


def whole(low: int, high: int) -> Check:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"must be a whole number from {low:,} to {high:,}")
        return value
    return check


def limit(high: float, unit: str) -> Check:
    """A retention limit: a positive number, or 0 / ``"never"`` for none (``None``)."""
    def check(value: object) -> float | None:
        if value == "never" or (not isinstance(value, bool) and value == 0):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
            raise Invalid(f'must be a number of {unit} from 0 to {high:,} (0 or "never": no limit)')
        return float(value)
    return check


def text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise Invalid("must be a text in quotes")


def choice(*options: str) -> Check:
    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        raise Invalid(f"must be one of {', '.join(options)}")
    return check


def _host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST.fullmatch(host))


def url(value: object) -> str:
    """An ``http(s)://host[:port][/path]`` text (the scheme may be left out), without its
    trailing ``/``."""
    written = text(value).strip()
    problem = Invalid('must be a URL such as "http://gpu-box:8000" (host, and a port from 1 to 65535)')
    if not written or any(c.isspace() or not c.isprintable() for c in written):
        raise problem
    parts = urlsplit(written if "://" in written else "http://" + written)
    try:
        port = parts.port
    except ValueError:
        raise problem from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _host(parts.hostname) or port == 0:
        raise problem
    return written.rstrip("/")


def parse_listen(value: object) -> tuple[str, int] | None:
    """``8001`` or ``"HOST:8001"`` as ``(host, port)``, loopback when no host is written;
    ``None`` when it is neither. The port's range is not checked here: :func:`listen` does
    (the config file), and so does the proxy before it binds (``--listen``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        host, port = "", str(value)
    elif isinstance(value, str):
        host, _, port = value.strip().rpartition(":")
    else:
        return None
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port.isascii() or not port.isdigit() or not _host(host):
        return None
    return host, int(port)


def listen(value: object) -> tuple[str, int]:
    """:func:`parse_listen` with a port from 1 to 65535."""
    parsed = parse_listen(value)
    if parsed is None or not 1 <= parsed[1] <= 65535:
        raise Invalid('must be a port (1 to 65535) or "HOST:PORT"')
    return parsed


# ---------------------------------------------------------------------------- the file
GENERAL: dict[str, Check] = {
    "retention_days": limit(MAX_RETENTION_DAYS, "days"),
    "retention_gb": limit(MAX_RETENTION_GB, "GB"),
    "system_interval_s": number(MIN_INTERVAL_S, MAX_INTERVAL_S, " seconds"),
    "server_interval_s": number(MIN_INTERVAL_S, MAX_INTERVAL_S, " seconds"),
    "discover_local": boolean,
    "theme": choice(*THEMES),
}
SERVER: dict[str, Check] = {"url": url, "kind": choice(*SERVER_KINDS), "name": text, "api_key_ref": text}
PROXY: dict[str, Check] = {
    "enabled": boolean, "include_usage": boolean, "store_content": boolean,
    "content_max_chars": whole(1, MAX_CONTENT_CHARS),
}
ROUTE: dict[str, Check] = {"upstream": url, "listen": listen, "kind": choice(*SERVER_KINDS), "name": text,
                           "enabled": boolean}
EXPORTER: dict[str, Check] = {"enabled": boolean, "listen": listen, "max_series_per_metric": whole(1, 1_000_000)}
def full_url(value: object) -> str:
    """:func:`url` with its scheme written (a Prometheus may be http or https: no guessing)."""
    if isinstance(value, str) and "://" not in value:
        raise Invalid('must be a URL with its scheme, such as "http://prometheus:9090"')
    return url(value)


PROMETHEUS: dict[str, Check] = {"url": full_url, "name": text, "username": text, "secret_ref": text,
                                "timeout_s": number(0.1, 120.0, " seconds")}
TABLES = {"general": "[general]", "servers": "[[servers]]", "proxy": "[proxy]", "exporter": "[exporter]",
          "prometheus": "[[prometheus]]"}
CHECKS: dict[str, Check] = {
    f"{prefix}.{key}": check
    for prefix, table in (("general", GENERAL), ("servers", SERVER), ("proxy", PROXY), ("proxy.routes", ROUTE),
                          ("exporter", EXPORTER), ("prometheus", PROMETHEUS))
    for key, check in table.items()}
"""Every setting's check by its key (``[[servers]]`` and ``[[proxy.routes]]`` keys without the
entry's index): what the settings dialog checks each field with."""


def check_setting(key: str, value: object) -> object:
    """One setting's value as llmmon uses it, or :class:`Invalid` saying what it must be (the
    settings dialog checks each field with this; :func:`load_settings` uses the same checks).

    >>> check_setting("general.retention_days", "never") is None
    True
    >>> check_setting("proxy.routes.listen", "0.0.0.0:8001")
    ('0.0.0.0', 8001)
    >>> check_setting("general.system_interval_s", 0.1)
    Traceback (most recent call last):
    ...
    app.config.Invalid: must be a number from 0.25 to 3600 seconds
    """
    return CHECKS[key](value)

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")

def key_text(key: Key) -> str:
    """``("servers", 1, "url")`` as ``servers[1].url``; a name that is not a bare TOML key in
    quotes, as TOML writes it (``general."a.b"``)."""
    def part(k: str | int) -> str:
        if isinstance(k, int):
            return f"[{k}]"
        return "." + (k if _BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False))
    return "".join(map(part, key)).lstrip(".")


def _shown(value: object) -> str:
    """A value as the user wrote it in TOML, shortened."""
    if value is None:
        shown = "no limit"
    elif isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, float):
        shown = f"{value:g}"
    elif isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        shown = "a table"
    elif isinstance(value, list):
        shown = "a list"
    else:
        shown = str(value)
    return shown if len(shown) <= 40 else shown[:37] + "…"


class _Reader:
    """Checks the parsed file key by key, collecting line-numbered problems."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = key_lines(text)
        self._problems: list[tuple[int, str]] = []

    @property
    def problems(self) -> list[str]:
        """In the order of the file's lines."""
        return [message for _, message in sorted(self._problems, key=lambda p: p[0])]

    def problem(self, key: Key, message: str) -> None:
        line = key_line(self.lines, key)
        where = f"{self.path} line {line}" if line else str(self.path)
        self._problems.append((line or 0, f"{where}: {key_text(key)} {message}"))

    def table(self, raw: dict[str, Any], key: Key, checks: dict[str, Check], defaults: object, what: str,
              required: tuple[str, ...] = (), nested: tuple[str, ...] = (),
              entry: str = "") -> dict[str, object] | None:
        """The good values of one table (``nested`` tables are read by the caller). A bad value
        is reported and keeps its default; a bad or missing ``required`` one makes it ``None``
        (the ``entry``, e.g. "server", is skipped)."""
        values: dict[str, object] = {}
        skipped = f"this {entry} is skipped"
        usable = True
        for name, value in raw.items():
            check = checks.get(name)
            if name in nested:
                continue
            if check is None:
                takes = ", ".join([*checks, *nested])
                self.problem((*key, name), f"is not a setting of {what} (it takes {takes}); ignored")
                continue
            try:
                values[name] = check(value)
            except Invalid as exc:
                usable = usable and name not in required
                fallback = skipped if name in required else f"using {_shown(getattr(defaults, name))}"
                self.problem((*key, name), f"{exc}, not {_shown(value)}; {fallback}")
        missing = [n for n in required if n not in raw]
        if missing:
            self.problem(key, f"needs {' and '.join(missing)}; {skipped}")
        return values if usable and not missing else None

    def tables(self, raw: dict[str, Any], key: Key, what: str) -> list[tuple[Key, dict[str, Any]]]:
        """The elements of the array of tables ``raw[key[-1]]``, each with its key; anything
        else is reported."""
        value = raw.get(str(key[-1]))
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be a list of {what} tables, not {_shown(value)}; ignored")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(((*key, i), item))
            else:
                self.problem((*key, i), f"must be a {what} table, not {_shown(item)}; ignored")
        return out

    def settings(self, raw: dict[str, Any]) -> Settings:
        settings = Settings()
        for name in raw:
            if name not in TABLES:
                self.problem((name,), f"is not a setting (config.toml holds {', '.join(TABLES.values())}); ignored")
        general = raw.get("general", {})
        if isinstance(general, dict):
            for name, value in (self.table(general, ("general",), GENERAL, settings, "[general]") or {}).items():
                setattr(settings, name, value)
        else:
            self.problem(("general",), f"must be a table ([general]), not {_shown(general)}; using the defaults")
        for key, entry in self.tables(raw, ("servers",), "[[servers]]"):
            values = self.table(entry, key, SERVER, ServerEntry(""), "[[servers]]", required=("url",),
                                entry="server")
            if values is not None:
                settings.servers.append(ServerEntry(**values))  # type: ignore[arg-type]
        proxy = raw.get("proxy", {})
        if isinstance(proxy, dict):
            settings.proxy = self.proxy(proxy)
        else:
            self.problem(("proxy",), f"must be a table ([proxy]), not {_shown(proxy)}; using the defaults")
        exporter = raw.get("exporter", {})
        if isinstance(exporter, dict):
            shown = SimpleNamespace(**asdict(settings.exporter),  # what a bad value falls back to
                                    listen=f"{settings.exporter.listen_host}:{settings.exporter.listen_port}")
            values = self.table(exporter, ("exporter",), EXPORTER, shown, "[exporter]") or {}
            if "listen" in values:
                settings.exporter.listen_host, settings.exporter.listen_port = cast(tuple[str, int],
                                                                                    values.pop("listen"))
            for name, value in values.items():
                setattr(settings.exporter, name, value)
        else:
            self.problem(("exporter",), f"must be a table ([exporter]), not {_shown(exporter)}; using the defaults")
        for key, entry in self.tables(raw, ("prometheus",), "[[prometheus]]"):
            source = self.table(entry, key, PROMETHEUS, PrometheusSource(""), "[[prometheus]]", required=("url",),
                                entry="Prometheus source")
            if source is not None:
                settings.prometheus.append(PrometheusSource(**source))  # type: ignore[arg-type]
        return settings

    def proxy(self, raw: dict[str, Any]) -> ProxySettings:
        values = self.table(raw, ("proxy",), PROXY, ProxySettings(), "[proxy]", nested=("routes",))
        proxy = ProxySettings(**(values or {}))  # type: ignore[arg-type]
        default = ProxyRoute("", 0)
        for key, entry in self.tables(raw, ("proxy", "routes"), "[[proxy.routes]]"):
            route = self.table(entry, key, ROUTE, default, "[[proxy.routes]]",
                               required=("upstream", "listen"), entry="route")
            if route is not None:
                host, port = cast(tuple[str, int], route.pop("listen"))
                proxy.routes.append(ProxyRoute(listen_host=host, listen_port=port, **route))  # type: ignore[arg-type]
        return proxy


def load_settings(path: Path | None = None) -> tuple[Settings, list[str]]:
    """Read the config file; never raises. A missing file gives the defaults. Each bad value
    keeps its default and gives a problem naming the key and its line; a file that is not
    TOML gives the defaults and one problem. The app shows the problems and keeps running."""
    path = path or config_path()
    try:
        if not path.exists():
            return Settings(), []
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        return Settings(), [f"{path}: cannot read it ({exc}); using the defaults"]
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        message = str(exc) if isinstance(exc, tomllib.TOMLDecodeError) else "nested too deeply"
        m = _TOML_POSITION.search(message)
        where = f"{path} line {m.group(1)}, column {m.group(2)}" if m else str(path)
        return Settings(), [f"{where}: {_TOML_POSITION.sub('', message)}; the file is not used (defaults instead)"]
    reader = _Reader(path, text)
    settings = reader.settings(raw)
    return settings, reader.problems
