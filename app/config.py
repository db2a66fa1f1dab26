"""Where llmmon keeps its files, and the user's settings file.

Paths come from ``platformdirs`` so they follow each OS's conventions; the database path can be
overridden with ``--db`` or the ``LLMMON_DB`` environment variable, the config file with
``LLMMON_CONFIG``. Settings live in a TOML file the user can edit; secrets never do (they go
to the OS keyring, see ``app/secrets.py``).
"""
from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

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
    kind: str = "auto"          # "auto", "ollama", "vllm", "openai", "llamacpp"
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


@dataclass
class ProxySettings:
    """``[proxy]``: off by default. With no ``[[proxy.routes]]``, Ollama :11434 gets a proxy on
    :11435 and each configured server one on its port + 1 (see ``app/proxy/group.py``)."""

    enabled: bool = False
    routes: list[ProxyRoute] = field(default_factory=list)
    include_usage: bool = False      # add stream_options.include_usage to OpenAI streams
    store_content: bool = False      # keep prompt/response text in the database
    content_max_chars: int = 16_384  # cap on each stored text


@dataclass
class Settings:
    """The user's settings, read from the TOML config file; every field has a safe default."""

    retention_days: float | None = 30.0
    retention_gb: float | None = None   # also keep the database under this many GB (1e9 bytes)
    system_interval_s: float = 1.0
    servers: list[ServerEntry] = field(default_factory=list)
    discover_local: bool = True
    proxy: ProxySettings = field(default_factory=ProxySettings)
    exporter: ExporterSettings = field(default_factory=lambda: ExporterSettings())
    prometheus: list[PrometheusSource] = field(default_factory=list)


def parse_listen(value: object) -> tuple[str, int] | None:
    """``8001`` or ``"HOST:8001"`` as ``(host, port)``; loopback when no host is written."""
    host, _, port = str(value).rpartition(":")
    if isinstance(value, bool) or not port.isdigit():
        return None
    return host or "127.0.0.1", int(port)


def _load_proxy(raw: object, path: Path, problems: list[str]) -> ProxySettings:
    proxy = ProxySettings()
    if not isinstance(raw, dict):
        return proxy
    for key in ("enabled", "include_usage", "store_content"):
        if isinstance(raw.get(key), bool):
            setattr(proxy, key, raw[key])
    if isinstance(raw.get("content_max_chars"), int) and raw["content_max_chars"] > 0:
        proxy.content_max_chars = raw["content_max_chars"]
    for i, entry in enumerate(raw.get("routes", [])):
        listen = parse_listen(entry.get("listen")) if isinstance(entry, dict) else None
        if listen is None or not isinstance(entry.get("upstream"), str):
            problems.append(f'{path}: proxy.routes[{i}] needs upstream = "http://..." and listen = PORT or "HOST:PORT"')
            continue
        proxy.routes.append(ProxyRoute(
            upstream=entry["upstream"].rstrip("/"), listen_port=listen[1], listen_host=listen[0],
            kind=str(entry.get("kind", "auto")), name=str(entry.get("name", ""))))
    return proxy


def load_settings(path: Path | None = None) -> tuple[Settings, list[str]]:
    """Read the config file. A missing file gives the defaults; a broken one gives the defaults
    and a list of human-readable problems (the app shows them and keeps running)."""
    path = path or config_path()
    settings = Settings()
    if not path.exists():
        return settings, []
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        return settings, [f"{path}: {exc} (using defaults)"]
    problems: list[str] = []
    general = raw.get("general", {})
    for key in ("retention_days", "retention_gb"):  # limits: a positive number, or 0/"never"
        if key not in general:
            continue
        value = general[key]
        if value in (0, None, "never"):
            setattr(settings, key, None)
        elif isinstance(value, (int, float)) and value > 0:
            setattr(settings, key, float(value))
        else:
            problems.append(f"{path}: general.{key} must be a positive number")
    if isinstance(general.get("system_interval_s"), (int, float)) and general["system_interval_s"] >= 0.25:
        settings.system_interval_s = float(general["system_interval_s"])
    settings.discover_local = bool(general.get("discover_local", True))
    for i, entry in enumerate(raw.get("servers", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            problems.append(f"{path}: servers[{i}] needs a url")
            continue
        settings.servers.append(ServerEntry(
            url=entry["url"].rstrip("/"), kind=str(entry.get("kind", "auto")),
            name=str(entry.get("name", "")), api_key_ref=str(entry.get("api_key_ref", ""))))
    settings.proxy = _load_proxy(raw.get("proxy"), path, problems)
    settings.exporter = _load_exporter(raw.get("exporter"), path, problems)
    settings.prometheus = _load_prometheus(raw.get("prometheus"), path, problems)
    return settings, problems


# ---------------------------------------------------------------------------- fleet
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


def _load_exporter(raw: object, path: Path, problems: list[str]) -> ExporterSettings:
    exporter = ExporterSettings()
    if not isinstance(raw, dict):
        if raw is not None:
            problems.append(f"{path}: exporter must be a table: [exporter]")
        return exporter
    if isinstance(raw.get("enabled"), bool):
        exporter.enabled = raw["enabled"]
    if "listen" in raw:
        listen = parse_listen(raw["listen"])
        if listen is None:
            problems.append(f'{path}: exporter.listen must be PORT or "HOST:PORT"')
        else:
            exporter.listen_host, exporter.listen_port = listen
    cap = raw.get("max_series_per_metric")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        exporter.max_series_per_metric = cap
    elif cap is not None:
        problems.append(f"{path}: exporter.max_series_per_metric must be a whole number above 0")
    return exporter


def _load_prometheus(raw: object, path: Path, problems: list[str]) -> list[PrometheusSource]:
    sources: list[PrometheusSource] = []
    if raw is not None and not isinstance(raw, list):
        problems.append(f'{path}: write each Prometheus as a [[prometheus]] table with url = "http://HOST:9090"')
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f'{path}: prometheus[{i}] needs url = "http://HOST:9090"')
            continue
        timeout = entry.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 120:
            problems.append(f"{path}: prometheus[{i}].timeout_s must be a number of seconds (0-120)")
            timeout = 5.0
        sources.append(PrometheusSource(url=url.rstrip("/"), name=str(entry.get("name", "")),
                                        username=str(entry.get("username", "")),
                                        secret_ref=str(entry.get("secret_ref", "")), timeout_s=float(timeout)))
    return sources
