"""A llama-server that only discovery knows about (no ``[[servers]]`` entry) gets its metering
proxy route: the Requests tab shows the address, and a request through it is recorded under the
server's identity with the counts the server itself reported."""
from __future__ import annotations

import time
from pathlib import Path

import openai

from app.config import Settings
from app.runtime import Runtime
from collectors.discovery import DiscoveryCollector
from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.support import query, wait_until
from tests.support.ports import free_run
from widgets.requests_panel import COLUMNS, RequestsPanel


def test_a_discovered_llama_server_gets_a_proxy_route_in_the_requests_tab(qtbot, tiny_model: Path,
                                                                           tmp_path: Path, db_file: Path) -> None:
    server = LlamaServer(tiny_model, tmp_path / "server.log", port=free_run(2)).start()
    settings = Settings(system_interval_s=60)
    runtime = Runtime.create(db_file, settings, collectors=[
        DiscoveryCollector(settings, ports=((server.port, "llama.cpp"),), interval=0.5)])
    try:
        runtime.start()
        panel = RequestsPanel(runtime)
        qtbot.addWidget(panel)
        panel.resize(1200, 800)
        panel.show()
        panel.enable.setChecked(True)   # what a click does, before or after discovery found it
        identity = f"llamacpp@127.0.0.1:{server.port}"
        route = f"http://127.0.0.1:{server.port + 1}"

        def shown() -> bool:
            panel.refresh(time.time())
            return f"Point clients at {route}</b> (base_url={route}/v1)" in panel.status.text()
        qtbot.waitUntil(shown, timeout=20_000)
        assert identity in panel.status.text() and "11435" not in panel.status.text()

        client = openai.OpenAI(base_url=f"{route}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "hello"}], max_tokens=24, temperature=0,
            extra_body={"ignore_eos": True})
        assert answer.usage is not None and answer.usage.completion_tokens == 24

        def listed() -> int:
            panel.refresh(time.time())
            return panel.sorter.rowCount()
        qtbot.waitUntil(lambda: listed() == 1, timeout=10_000)
        server_column = [c[0] for c in COLUMNS].index("Server")
        assert panel.sorter.index(0, server_column).data() == identity
        panel.grab().save(str(tmp_path / "requests_real.png"))
        wait_until(lambda: query(db_file, "SELECT count(*) FROM requests")[0][0] == 1, what="the request row")
    finally:
        runtime.stop()
        server.stop()
    assert query(db_file, "SELECT server, model, status, prompt_tokens, completion_tokens, tokens_estimated, "
                          "error_type FROM requests") == [
        (identity, ALIAS, 200, answer.usage.prompt_tokens, 24, 0, "")]
