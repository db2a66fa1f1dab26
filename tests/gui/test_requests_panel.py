"""The Requests tab, offscreen: the proxy switch and the address to use, the empty state, the
table of recent requests (sortable) and the charts, with requests through a real proxy."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PySide6.QtCore import Qt

from app.config import ProxyRoute, Settings
from app.runtime import Runtime
from tests.sim.upstream import SimUpstream
from tests.support.proxy import json_chunks
from widgets.requests_panel import COLUMNS, HOW_TO, RequestsPanel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def setup(db_file: Path) -> Iterator[tuple[Runtime, SimUpstream, int]]:
    with SimUpstream() as up:
        port = free_port()
        settings = Settings(system_interval_s=60)
        settings.proxy.routes = [ProxyRoute(up.url, port, kind="vllm")]
        runtime = Runtime.create(db_file, settings=settings)
        runtime.start()
        yield runtime, up, port
        runtime.stop()


def column(name: str) -> int:
    return [c[0] for c in COLUMNS].index(name)


def test_empty_state_explains_how_to_use_the_proxy(qtbot, setup) -> None:
    runtime, up, port = setup
    panel = RequestsPanel(runtime)
    qtbot.addWidget(panel)
    panel.refresh(0.0)
    assert not panel.enable.isChecked()
    assert panel.table_stack.currentWidget() is panel.empty and panel.empty.text() == HOW_TO
    assert f"would listen on http://127.0.0.1:{port}" in panel.status.text()


def test_enable_then_requests_fill_table_and_charts(qtbot, setup, tmp_path: Path) -> None:
    runtime, up, port = setup
    panel = RequestsPanel(runtime)
    qtbot.addWidget(panel)
    panel.resize(1200, 800)
    panel.show()
    panel.enable.setChecked(True)  # what a click does
    assert runtime.proxies.running
    assert f"Point clients at http://127.0.0.1:{port}" in panel.status.text()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    usage = json_chunks("vllm_stream.sse")[-1]["usage"]
    list(client.chat.completions.create(model="tiny-llama", messages=[], stream=True,
                                        stream_options={"include_usage": True}))
    list(client.chat.completions.create(model="tiny-llama", messages=[], stream=True))  # no usage: ~count
    client.chat.completions.create(model="tiny-llama", messages=[])

    def table_rows() -> int:
        panel.refresh(time.time())
        return panel.sorter.rowCount()
    qtbot.waitUntil(lambda: table_rows() == 3, timeout=10_000)
    assert panel.table_stack.currentWidget() is panel.table
    out = column("Output tok")
    panel.table.sortByColumn(out, Qt.SortOrder.DescendingOrder)
    texts = [panel.sorter.index(i, out).data() for i in range(3)]
    whole = json_chunks("vllm_chat.json")[0]["usage"]["completion_tokens"]
    assert sorted(texts) == sorted([str(usage["completion_tokens"]), f"~{usage['completion_tokens']}", str(whole)])
    numbers = [int(t.lstrip("~")) for t in texts]
    assert numbers == sorted(numbers, reverse=True)
    panel.table.sortByColumn(out, Qt.SortOrder.AscendingOrder)
    ascending = [int(panel.sorter.index(i, out).data().lstrip("~")) for i in range(3)]
    assert ascending == sorted(ascending)
    assert {panel.sorter.index(i, column("Model")).data() for i in range(3)} == {"tiny-llama"}
    def drawn() -> bool:
        panel.refresh(time.time())
        return bool(panel.tokens_plot.curve_keys()) and bool(panel.active_plot.curve_keys())
    qtbot.waitUntil(drawn, timeout=10_000)
    panel.grab().save(str(tmp_path / "requests_panel.png"))
    panel.enable.setChecked(False)
    assert not runtime.proxies.running and "would listen on" in panel.status.text()


def test_a_busy_port_is_shown_as_an_error(qtbot, db_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = Settings(system_interval_s=60)
        settings.proxy.routes = [ProxyRoute("http://127.0.0.1:11434", busy.getsockname()[1])]
        runtime = Runtime.create(db_file, settings=settings)
        try:
            panel = RequestsPanel(runtime)
            qtbot.addWidget(panel)
            panel.enable.setChecked(True)
            assert "is another program using that port" in panel.status.text()
            assert not panel.enable.isChecked()
        finally:
            runtime.stop()
