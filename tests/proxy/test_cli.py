"""The proxy as the user runs it: ``main.py proxy`` headless, the ``[proxy]`` settings, and the
runtime starting it — records end up in the SQLite file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from app.config import ProxyRoute, ServerEntry, Settings, load_settings
from app.proxy import ProxyServer
from app.proxy.group import plan_routes
from app.runtime import Runtime
from tests.sim.upstream import SimUpstream
from tests.support import count, query, wait_until
from tests.support.proxy import json_chunks

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_main_py_proxy_records_requests_into_the_database(db_file: Path) -> None:
    usage = json_chunks("vllm_stream.sse")[-1]["usage"]
    port = free_port()
    with SimUpstream() as up:
        env = {**os.environ, "QT_QPA_PLATFORM": ""}
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--db", str(db_file), "proxy", "--upstream", up.url,
             "--listen", str(port), "--kind", "vllm"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert f"point your clients at http://127.0.0.1:{port}" in line, line + proc.stderr.read()
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            list(client.chat.completions.create(model="tiny-llama", messages=[], stream=True,
                                                stream_options={"include_usage": True}))
            wait_until(lambda: count(db_file, "requests") == 1, timeout=20, what="the request row")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "all data written" in out
    row = query(db_file, "SELECT server, endpoint, model, status, stream, prompt_tokens, completion_tokens, "
                         "tokens_estimated, error_type FROM requests")
    assert row == [(f"vllm@127.0.0.1:{up.port}", "/v1/chat/completions", "tiny-llama", 200, 1,
                    usage["prompt_tokens"], usage["completion_tokens"], 0, "")]


def test_proxy_settings_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[proxy]\nenabled = true\ninclude_usage = true\nstore_content = true\ncontent_max_chars = 100\n'
        '[[proxy.routes]]\nupstream = "http://127.0.0.1:8000/"\nlisten = 8001\nkind = "vllm"\n'
        '[[proxy.routes]]\nupstream = "http://10.0.0.5:11434"\nlisten = "0.0.0.0:11435"\n'
        '[[proxy.routes]]\nupstream = "http://x"\n', encoding="utf-8")
    settings, problems = load_settings(path)
    proxy = settings.proxy
    assert (proxy.enabled, proxy.include_usage, proxy.store_content, proxy.content_max_chars) == (True, True, True, 100)
    assert proxy.routes == [ProxyRoute("http://127.0.0.1:8000", 8001, "127.0.0.1", "vllm"),
                            ProxyRoute("http://10.0.0.5:11434", 11435, "0.0.0.0")]
    assert len(problems) == 1 and "proxy.routes[2]" in problems[0]


def test_default_routes_are_loopback_on_the_next_port() -> None:
    """One route per known server, none for a server nobody configured or found (no Ollama
    route on a machine without Ollama)."""
    settings = Settings(servers=[ServerEntry("http://127.0.0.1:8000", kind="vllm"),
                                 ServerEntry("http://127.0.0.1:8080", kind="llamacpp")])
    routes = plan_routes(settings, free=lambda host, port: True)
    assert [(r.upstream, r.listen_host, r.listen_port) for r in routes] == [
        ("http://127.0.0.1:8000", "127.0.0.1", 8001),
        ("http://127.0.0.1:8080", "127.0.0.1", 8081)]
    assert load_settings(Path("/nonexistent/config.toml"))[0].proxy.enabled is False


def test_runtime_runs_the_enabled_proxy_and_reports_a_busy_port(db_file: Path) -> None:
    with socket.socket() as busy, SimUpstream() as up:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = free_port()
        settings = Settings(system_interval_s=60)
        settings.proxy.enabled = True
        settings.proxy.routes = [ProxyRoute(up.url, port, kind="vllm"),
                                 ProxyRoute("http://127.0.0.1:9", busy.getsockname()[1])]
        runtime = Runtime.create(db_file, settings=settings)
        runtime.start()
        try:
            ok, taken = runtime.proxies.status()
            assert ok.running and ok.listen == f"http://127.0.0.1:{port}"
            assert not taken.running and "is another program using that port" in taken.error
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model="tiny-llama", messages=[])
            wait_until(lambda: runtime.hub.buffers.find("llm_requests_per_second"), what="request rate samples")
        finally:
            runtime.stop()
    assert query(db_file, "SELECT completion_tokens, error_type FROM requests") == [(32, "")]
    names = {r[0] for r in query(db_file, "SELECT name FROM series")}
    assert {"llm_requests_per_second", "llm_requests_active", "llm_tokens_per_second"} <= names


def test_listen_port_out_of_range_is_refused_with_a_clear_message() -> None:
    """Before, ``--listen 99999`` bound some other port (99999 modulo 65536) while telling the
    user to point clients at :99999."""
    for listen in ("99999", "127.0.0.1:70000", "0"):
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), "proxy", "--upstream", "http://127.0.0.1:9",
                               "--listen", listen], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        port = listen.rpartition(":")[2]
        assert f"{port} is not a port (a port is a number from 1 to 65535)" in done.stderr
        assert "point your clients" not in done.stdout


def test_config_routes_with_ports_out_of_range_report_an_error_and_the_others_run(db_file: Path,
                                                                                   tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    port = free_port()
    with SimUpstream() as up:
        path.write_text(f'[proxy]\nenabled = true\n'
                        f'[[proxy.routes]]\nupstream = "{up.url}"\nlisten = 99999\n'
                        f'[[proxy.routes]]\nupstream = "{up.url}"\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
        settings, problems = load_settings(path)
        # The config file names the bad port with its line and skips that route...
        assert problems == [f'{path} line 5: proxy.routes[0].listen must be a port (1 to 65535) or "HOST:PORT", '
                            "not 99999; this route is skipped"]
        settings.servers = [ServerEntry("http://127.0.0.1:65535", kind="vllm")]  # its default route: :65536
        runtime = Runtime.create(db_file, settings=settings)
        runtime.start()
        try:
            # ... and a port made out of range elsewhere (a server's port + 1) is refused at start.
            ok, next_port = runtime.proxies.status()
            assert not next_port.running and next_port.error == (
                "cannot listen on 127.0.0.1:65536: 65536 is not a port (a port is a number from 1 to 65535)")
            assert ok.running and ok.listen == f"http://127.0.0.1:{port}"
        finally:
            runtime.stop()
    with pytest.raises(OSError, match="99999 is not a port"):
        ProxyServer("http://127.0.0.1:11434", listen_port=99999).start()


def test_main_py_proxy_exits_non_zero_when_its_recording_stops(db_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A thread that must not die dies: ``main.py proxy`` says why and exits 3, as ``--headless``
    does, so a service manager sees it and restarts it."""
    import main
    from app.proxy import cli

    monkeypatch.setattr(Runtime, "failure", lambda self: "the store writer stopped: injected")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with SimUpstream() as up:
            code = cli.run(main.parse_args(["--db", str(db_file), "proxy", "--upstream", up.url,
                                            "--listen", str(free_port()), "--kind", "vllm"]))
    finally:  # the recorder installed its own Ctrl-C handler: give pytest its own back
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert code == 3
    assert "recording stopped: the store writer stopped: injected" in capsys.readouterr().err
