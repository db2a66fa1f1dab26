"""The settings file: a typo gives a message naming its key and line, keeps that setting's
default, and the app's core still starts and records; arbitrary TOML (and arbitrary bytes)
never stop the loading, and whatever is loaded is of the right type and in range."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import (
    GENERAL,
    MAX_CONTENT_CHARS,
    MAX_RETENTION_DAYS,
    MAX_RETENTION_GB,
    PROXY,
    SERVER_KINDS,
    Invalid,
    Settings,
    config_path,
    load_settings,
    url,
)
from app.runtime import Runtime
from app.server_names import host_port
from collectors.discovery import normalise_url
from tests.support import count, wait_until

ROOT = Path(__file__).resolve().parents[2]

# The typos from issue 11, each once at start-up: (file text, key, its line).
TYPOS = [
    ('[[servers]]\nurl = "http://gpu-box:80a"\n', "servers[0].url", 3),
    ("general = 5\n", "general", 2),
    ("servers = 5\n", "servers", 2),
    ("[proxy]\nroutes = 5\n", "proxy.routes", 3),
    ("[general]\nretention_gb = inf\n", "general.retention_gb", 3),
    ("[general]\nretention_days = true\n", "general.retention_days", 3),
    ('[general]\ndiscover_local = "false"\n', "general.discover_local", 3),
]


def write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# my settings\n" + text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "key", "line"), TYPOS, ids=[k for _, k, _ in TYPOS])
def test_a_typo_is_named_with_its_line_and_the_core_still_records(text: str, key: str, line: int,
                                                                   db_file: Path) -> None:
    path = write_config(text)
    runtime = Runtime.create(db_file)
    try:
        runtime.start()
        assert len(runtime.problems) == 1
        assert runtime.problems[0].startswith(f"{path} line {line}: {key} "), runtime.problems
        assert runtime.settings == Settings()  # every typo falls back to the default
        wait_until(lambda: count(db_file, "samples") > 0, what="samples recorded despite the typo")
    finally:
        runtime.stop()


def test_headless_starts_with_every_typo_and_says_where_each_is(tmp_path: Path) -> None:
    path = write_config('[general]\nretention_gb = inf\nretention_days = true\ndiscover_local = "false"\n\n'
                        '[[servers]]\nurl = "http://gpu-box:80a"\n\n[proxy]\nroutes = 5\n')
    db = tmp_path / "llmmon.db"
    env = {**os.environ, "QT_QPA_PLATFORM": ""}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "recording to" in line, line + proc.stderr.read()
        wait_until(lambda: count(db, "samples") > 0, timeout=20, what="samples from --headless")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for key, n in (("general.retention_gb", 3), ("general.retention_days", 4), ("general.discover_local", 5),
                   ("servers[0].url", 8), ("proxy.routes", 11)):
        assert f"config: {path} line {n}: {key} " in err, err


def test_good_settings_are_read_in_every_toml_spelling(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('general.retention_days = 7\ngeneral.retention_gb = "never"\n'
                    'servers = [{ url = "gpu-box:8000/", kind = "vllm" }, { url = "https://[::1]:8443/v1" }]\n'
                    '[proxy]\nenabled = true\ncontent_max_chars = 100\n'
                    '[[proxy.routes]]\nupstream = "http://127.0.0.1:8000"\nlisten = "0.0.0.0:8001"\n'
                    '[[proxy.routes]]\nupstream = "http://127.0.0.1:8080"\nlisten = 8081\nkind = "llamacpp"\n',
                    encoding="utf-8")
    loaded, problems = load_settings(path)
    assert problems == []
    assert (loaded.retention_days, loaded.retention_gb) == (7.0, None)
    assert [(s.url, s.kind) for s in loaded.servers] == [("gpu-box:8000", "vllm"), ("https://[::1]:8443/v1", "auto")]
    assert [(r.listen_host, r.listen_port, r.kind) for r in loaded.proxy.routes] == [
        ("0.0.0.0", 8001, "auto"), ("127.0.0.1", 8081, "llamacpp")]
    assert loaded.proxy.enabled and loaded.proxy.content_max_chars == 100


def test_each_bad_value_keeps_its_own_default_and_the_rest_is_used(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[general]\nretention_days = 14\nretention_dayz = 3\nsystem_interval_s = 0\n'
                    '[[servers]]\nurl = "http://a:8000"\nkind = "vlm"\n'
                    '[[servers]]\nname = "no url"\n'
                    '[[proxy.routes]]\nupstream = "http://a:8000"\nlisten = 70000\n'
                    '[generl]\n', encoding="utf-8")
    loaded, problems = load_settings(path)
    assert loaded.retention_days == 14 and loaded.system_interval_s == 1.0
    assert [(s.url, s.kind) for s in loaded.servers] == [("http://a:8000", "auto")]
    assert loaded.proxy.routes == []
    assert problems == [
        f"{path} line 3: general.retention_dayz is not a setting of [general] (it takes retention_days, "
        "retention_gb, system_interval_s, server_interval_s, discover_local, theme); ignored",
        f"{path} line 4: general.system_interval_s must be a number from 0.25 to 3600 seconds, not 0; using 1",
        f"{path} line 7: servers[0].kind must be one of auto, ollama, vllm, llamacpp, openai, not \"vlm\"; "
        'using "auto"',
        f"{path} line 8: servers[1] needs url; this server is skipped",
        f'{path} line 12: proxy.routes[0].listen must be a port (1 to 65535) or "HOST:PORT", not 70000; '
        "this route is skipped",
        f"{path} line 13: generl is not a setting (config.toml holds [general], [[servers]], [proxy], "
        "[exporter], [[prometheus]]); ignored",
    ]


def test_a_file_that_is_not_toml_gives_the_defaults_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[general]\nretention_days = 7\nretention_gb = 5 GB\n", encoding="utf-8")
    assert load_settings(path) == (Settings(), [
        f"{path} line 3, column 18: Expected newline or end of document after a statement; "
        "the file is not used (defaults instead)"])
    path.write_bytes(b"\xff\xfe[general]")
    loaded, problems = load_settings(path)
    assert loaded == Settings() and "cannot read it" in problems[0]


# ---------------------------------------------------------------------------- properties
def assert_usable(loaded: Settings) -> None:
    """Every value is of its type and in its range; every URL is one the collectors can use."""
    for limit, high in ((loaded.retention_days, MAX_RETENTION_DAYS), (loaded.retention_gb, MAX_RETENTION_GB)):
        assert limit is None or (type(limit) is float and 0 < limit <= high)
    assert type(loaded.system_interval_s) is float and 0.25 <= loaded.system_interval_s <= 3600
    assert type(loaded.discover_local) is bool
    for server in loaded.servers:
        assert url(server.url) == server.url and server.kind in SERVER_KINDS
        assert type(server.name) is str and type(server.api_key_ref) is str
        assert 1 <= host_port(server.url)[1] <= 65535 and normalise_url(server.url)
    proxy = loaded.proxy
    assert all(type(getattr(proxy, k)) is bool for k in ("enabled", "include_usage", "store_content"))
    assert type(proxy.content_max_chars) is int and 1 <= proxy.content_max_chars <= MAX_CONTENT_CHARS
    for route in proxy.routes:
        assert url(route.upstream) == route.upstream and route.kind in SERVER_KINDS and type(route.name) is str
        assert type(route.listen_port) is int and 1 <= route.listen_port <= 65535
        assert type(route.listen_host) is str and route.listen_host


KEY_PART = re.compile(r'"(?:[^"\\]|\\.)*"|\[\d+\]|[A-Za-z0-9_-]+')


def named_key(message: str) -> tuple[str | int, ...]:
    """The key a message starts with: ``servers[1]."a b" must...`` → ``("servers", 1, "a b")``."""
    key: list[str | int] = []
    pos = 0
    while m := KEY_PART.match(message, pos):
        part = m.group()
        key.append(int(part[1:-1]) if part[0] == "[" else json.loads(part) if part[0] == '"' else part)
        pos = m.end() + (message[m.end():m.end() + 1] == ".")
    assert message[pos - 1:pos] == " " or message[pos:pos + 1] == " ", message
    return tuple(key)


def written(raw: object, key: tuple[str | int, ...]) -> bool:
    for part in key:
        if isinstance(part, int) and isinstance(raw, list) and part < len(raw):
            raw = raw[part]
        elif isinstance(part, str) and isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return False
    return True


TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # TOML holds no lone surrogates
NAMES = st.text(string.ascii_lowercase + "_ -.\"'", min_size=1, max_size=8)
SCALARS = st.one_of(st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**310),
                    st.floats(), TEXT, st.datetimes(), st.dates(), st.times())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                      max_leaves=6)
PORTS = st.integers(min_value=-1, max_value=70_000)
HOSTS = st.sampled_from(["gpu-box", "127.0.0.1", "[::1]", "", "gpu box", "::1", "ĥost", "a/b"])
URLS = st.builds("{}://{}:{}{}".format, st.sampled_from(["http", "https", "ftp", ""]), HOSTS,
                 PORTS.map(str) | st.sampled_from(["80a", "", "+1"]), st.sampled_from(["", "/", "/v1"]))
LISTENS = PORTS | st.builds("{}:{}".format, HOSTS, PORTS)
PLAUSIBLE = {
    "retention_days": st.floats(-1, 40_000) | st.just("never"), "retention_gb": st.floats(-1, 2e6),
    "system_interval_s": st.floats(0, 4000), "content_max_chars": st.integers(-1, MAX_CONTENT_CHARS + 1),
    "url": URLS, "upstream": URLS, "listen": LISTENS, "kind": st.sampled_from([*SERVER_KINDS, "vlm", ""]),
}


def known_table(keys) -> st.SearchStrategy[dict]:
    """A table with some of ``keys``, each a plausible or an arbitrary value, sometimes an unknown key."""
    return st.fixed_dictionaries({}, optional={
        **{k: st.one_of(PLAUSIBLE.get(k, st.booleans()), VALUES) for k in keys}, "typo_key": VALUES})


SERVER_TABLES = st.lists(known_table(["url", "kind", "name", "api_key_ref"]), max_size=3)
ROUTE_TABLES = st.lists(known_table(["upstream", "listen", "kind", "name"]), max_size=3)
PROXY_TABLE = known_table(list(PROXY)).flatmap(
    lambda table: st.one_of(ROUTE_TABLES, VALUES).map(lambda routes: {**table, "routes": routes}))
DOCUMENTS = st.fixed_dictionaries({}, optional={
    "general": known_table(list(GENERAL)) | VALUES, "servers": SERVER_TABLES | VALUES,
    "proxy": PROXY_TABLE | VALUES, "extra": VALUES})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_any_toml_document_loads_with_every_problem_naming_its_key_and_line(document: dict, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("config") / "config.toml"
    text = tomli_w.dumps(document)
    path.write_text(text, encoding="utf-8")
    raw = tomllib.loads(text)
    loaded, problems = load_settings(path)
    assert_usable(loaded)
    lines = text.splitlines()
    for problem in problems:
        m = re.match(rf"{re.escape(str(path))} line (\d+): ", problem)
        assert m, problem
        key = named_key(problem[m.end():])
        assert written(raw, key), problem  # the key the message names is in the file
        # ... and the line is that key's (or, when written inside a value, its parent's).
        line = lines[int(m.group(1)) - 1]
        assert any(p in line or json.dumps(p)[1:-1] in line for p in key if isinstance(p, str)), (problem, text)
    # A value that is good for its key is used, not dropped.
    general = document.get("general")
    if isinstance(general, dict):
        for name, value in general.items():
            try:
                good = GENERAL[name](value)
            except (Invalid, KeyError):
                continue
            assert getattr(loaded, name) == good


@settings(max_examples=200, deadline=None)
@given(content=st.text() | st.binary())
def test_any_file_content_loads(content: str | bytes, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("config") / "config.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(content)
    loaded, problems = load_settings(path)
    assert_usable(loaded)
    assert all(p.startswith(str(path)) for p in problems)


def test_extreme_numbers_are_out_of_range_not_crashes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[general]\nretention_days = 1{'0' * 308}\nretention_gb = nan\nsystem_interval_s = -inf\n"
                    f"[proxy]\ncontent_max_chars = 1{'0' * 30}\n", encoding="utf-8")
    loaded, problems = load_settings(path)
    assert loaded == Settings() and len(problems) == 4
    assert not math.isnan(loaded.retention_gb or 0)
