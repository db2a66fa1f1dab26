"""``[exporter]`` and ``[[prometheus]]`` in config.toml: read as written, a mistake named with the
file and the key (the rest of the settings still apply), and the exporter started from them."""
from __future__ import annotations

from pathlib import Path

import httpx
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ExporterSettings, PrometheusSource, load_settings
from app.runtime import Runtime
from tests.real_server.llama_server import free_port
from tests.support import wait_until


def test_exporter_and_prometheus_sources_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[general]\ndiscover_local = false\n\n[exporter]\nenabled = true\nlisten = "0.0.0.0:9100"\n'
                    'max_series_per_metric = 50\n\n[[prometheus]]\nurl = "http://prom.lan:9090/"\nname = "lab"\n'
                    'username = "grafana"\nsecret_ref = "prom"\ntimeout_s = 2.5\n\n'
                    '[[prometheus]]\nurl = "https://prom.example.org"\n', encoding="utf-8")
    loaded, problems = load_settings(path)
    assert problems == []
    assert loaded.exporter == ExporterSettings(True, "0.0.0.0", 9100, 50)
    assert loaded.prometheus == [PrometheusSource("http://prom.lan:9090", "lab", "grafana", "prom", 2.5),
                                 PrometheusSource("https://prom.example.org")]
    defaults, _ = load_settings(tmp_path / "missing.toml")
    assert defaults.exporter == ExporterSettings(False, "127.0.0.1", 9787, 1000) and defaults.prometheus == []


def test_mistakes_are_named_and_the_rest_applies(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[general]\ndiscover_local = false\n\n[exporter]\nenabled = true\nlisten = "localhost:http"\n'
                    'max_series_per_metric = -3\n\n[[prometheus]]\nurl = "prom.lan:9090"\n\n'
                    '[[prometheus]]\nurl = "http://ok:9090"\ntimeout_s = "soon"\n', encoding="utf-8")
    loaded, problems = load_settings(path)
    assert problems == [
        f'{path} line 6: exporter.listen must be a port (1 to 65535) or "HOST:PORT", not "localhost:http"; '
        'using "127.0.0.1:9787"',
        f"{path} line 7: exporter.max_series_per_metric must be a whole number from 1 to 1,000,000, not -3; "
        "using 1000",
        f'{path} line 10: prometheus[0].url must be a URL with its scheme, such as "http://prometheus:9090", '
        'not "prom.lan:9090"; this Prometheus source is skipped',
        f'{path} line 14: prometheus[1].timeout_s must be a number from 0.1 to 120 seconds, not "soon"; using 5']
    assert loaded.exporter == ExporterSettings(True, "127.0.0.1", 9787, 1000)  # on, at the safe default
    assert loaded.prometheus == [PrometheusSource("http://ok:9090")]
    assert loaded.discover_local is False
    path.write_text('exporter = 9100\n\n[prometheus]\nurl = "http://prom:9090"\n', encoding="utf-8")
    assert load_settings(path)[1] == [
        f"{path} line 1: exporter must be a table ([exporter]), not 9100; using the defaults",
        f"{path} line 3: prometheus must be a list of [[prometheus]] tables, not a table; ignored"]


def test_the_runtime_serves_what_the_config_says(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f'[general]\ndiscover_local = false\n\n[exporter]\nenabled = true\nlisten = {port}\n',
                    encoding="utf-8")
    loaded, _ = load_settings(path)
    runtime = Runtime.create(tmp_path / "llmmon.db", loaded)
    runtime.start()
    try:
        wait_until(lambda: "system_cpu_percent " in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                   what="the exporter the config turned on")
    finally:
        runtime.stop()


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=10)
tables = st.fixed_dictionaries({}, optional={
    "exporter": st.dictionaries(st.sampled_from(["enabled", "listen", "max_series_per_metric", "other"]), values),
    "prometheus": st.lists(st.dictionaries(st.sampled_from(["url", "name", "username", "secret_ref", "timeout_s"]),
                                           values, max_size=5), max_size=3) | values,
})


def _toml_safe(value: object) -> bool:
    return value is not None and not (isinstance(value, list) and not all(map(_toml_safe, value))) and not (
        isinstance(value, dict) and not all(map(_toml_safe, value.values())))


@settings(max_examples=150, deadline=None)
@given(tables.filter(_toml_safe))
def test_any_fleet_tables_give_settings_or_problems(tmp_path_factory, raw: dict) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(tomlkit.dumps(raw), encoding="utf-8")
    loaded, problems = load_settings(path)
    assert all(isinstance(p, str) and str(path) in p for p in problems)
    assert isinstance(loaded.exporter.listen_port, int) and loaded.exporter.max_series_per_metric > 0
    assert all(s.url.startswith(("http://", "https://")) and 0 < s.timeout_s <= 120 for s in loaded.prometheus)
