"""The Servers, GPU and vLLM tabs (real Qt widgets, offscreen) fed by the real runtime whose
collectors poll simulated servers over HTTP on 127.0.0.1."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QProgressBar

from app.config import ServerEntry, Settings
from app.runtime import Runtime
from tests.sim.ollama import SimOllama
from tests.sim.vllm import SimVllm
from widgets.gpu_panel import GpuPanel
from widgets.servers_panel import NONE_FOUND, ServersPanel
from widgets.vllm_panel import NO_VLLM, VllmPanel


@pytest.fixture
def servers() -> Iterator[tuple[SimOllama, SimVllm]]:
    ollama = SimOllama().start()
    ollama.load(SimOllama.partially_offloaded_model())
    vllm = SimVllm().start()
    yield ollama, vllm
    ollama.stop()
    vllm.stop()


@pytest.fixture
def runtime_for(db_file: Path) -> Iterator:
    made: list[Runtime] = []

    def make(settings: Settings) -> Runtime:
        runtime = Runtime.create(db_file, settings)
        made.append(runtime)
        return runtime
    yield make
    for runtime in made:
        runtime.stop()


def tree_rows(panel: ServersPanel) -> dict[str, list[str]]:
    rows = {}
    tree = panel.tree
    for i in range(tree.topLevelItemCount()):
        item = tree.topLevelItem(i)
        rows[item.text(0).lstrip("● ")] = [item.text(c) for c in range(tree.columnCount())]
        for j in range(item.childCount()):
            child = item.child(j)
            bar = tree.itemWidget(child, 5)
            assert bar is None or isinstance(bar, QProgressBar)
            rows[child.text(0).strip()] = [child.text(c) for c in range(tree.columnCount())] + [
                bar.text() if bar is not None else ""]
    return rows


def test_servers_tab_lists_servers_models_vram_and_a_server_going_down(qtbot, servers, runtime_for) -> None:
    ollama, vllm = servers
    runtime = runtime_for(Settings(discover_local=False, servers=[ServerEntry(ollama.url), ServerEntry(vllm.url)]))
    panel = ServersPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    runtime.start()
    o_name, v_name = f"ollama@127.0.0.1:{ollama.port}", f"vllm@127.0.0.1:{vllm.port}"

    def listed() -> bool:
        panel.refresh(0.0)
        rows = tree_rows(panel)
        return {o_name, v_name, "gemma4", "mistral:latest", "tiny-llama"} <= set(rows)
    qtbot.waitUntil(listed, timeout=15_000)
    rows = tree_rows(panel)
    assert rows[o_name][1:4] == ["ollama", "0.12.6", "UP"] and rows[v_name][1] == "vllm"
    assert rows[o_name][4].endswith(" ms")
    assert rows["gemma4"][-1] == "81% in VRAM · 5.0 of 6.1 GiB" and rows["gemma4"][2] == "context 4096"
    assert rows["mistral:latest"][-1].startswith("100% in VRAM")
    assert not panel.empty.isVisible()

    ollama.go_down()

    def down() -> bool:
        panel.refresh(0.0)
        return tree_rows(panel)[o_name][3] == f"DOWN: connection refused on :{ollama.port}"
    qtbot.waitUntil(down, timeout=15_000)
    assert "gemma4" not in tree_rows(panel)  # a down server's models are not claimed as loaded


def test_servers_tab_says_why_when_there_is_no_server(qtbot, runtime_for) -> None:
    runtime = runtime_for(Settings(discover_local=True))  # nothing listens on the default ports here
    panel = ServersPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    panel.refresh(0.0)
    assert panel.empty.isVisible() and panel.empty.text().startswith("Looking for LLM servers")
    runtime.start()

    def explained() -> bool:
        panel.refresh(0.0)
        return panel.empty.text().startswith(NONE_FOUND)
    qtbot.waitUntil(explained, timeout=15_000)
    assert "Ollama: connection refused on :11434" in panel.empty.text()
    assert not panel.tree.isVisible()
    panel.grab()  # renders without error


def test_gpu_tab_shows_the_no_gpu_state_and_the_server_process(qtbot, servers, runtime_for) -> None:
    ollama, _ = servers
    runtime = runtime_for(Settings(discover_local=False, servers=[ServerEntry(ollama.url)]))
    panel = GpuPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    runtime.start()
    name = f"ollama@127.0.0.1:{ollama.port}"

    def ready() -> bool:
        panel.refresh(runtime.hub.clock())
        return panel.util_plot.empty_text.startswith("No NVIDIA GPU found (NVML: ") and \
            panel.servers.item(0, 0).text() == name
    qtbot.waitUntil(ready, timeout=15_000)
    assert all(plot.showing_empty_text for plot in panel.plots)
    assert panel.header.text().startswith("No NVIDIA GPU found")
    assert panel.processes.item(0, 0).text() == "no NVIDIA GPU"
    assert panel.servers.item(0, 2).text().endswith("MiB")  # this process serves the simulated Ollama


def test_vllm_tab_charts_queue_cache_and_percentiles(qtbot, servers, runtime_for) -> None:
    _, vllm = servers
    runtime = runtime_for(Settings(discover_local=False, servers=[ServerEntry(vllm.url)]))
    panel = VllmPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    panel.refresh(runtime.hub.clock())
    assert panel.ttft_plot.empty_text == NO_VLLM
    runtime.start()
    name = f"vllm@127.0.0.1:{vllm.port}"
    qtbot.waitUntil(lambda: bool(runtime.hub.buffers.find("vllm_requests_running", server=name)), timeout=15_000)
    vllm.advance()  # 24 requests were served

    def p50_drawn() -> bool:
        panel.refresh(runtime.hub.clock())
        keys = [k for k in panel.ttft_plot.curve_keys() if dict(k[1]).get("quantile") == "0.5"]
        return bool(keys) and panel.ttft_plot.curve(keys[0]).yData is not None and \
            len(panel.ttft_plot.curve(keys[0]).yData) > 0
    qtbot.waitUntil(p50_drawn, timeout=15_000)
    p50 = next(k for k in panel.ttft_plot.curve_keys() if dict(k[1]).get("quantile") == "0.5")
    assert panel.ttft_plot.curve(p50).yData[-1] == pytest.approx(0.1 + 0.15 * 5 / 17)
    assert not panel.queue_plot.showing_empty_text and not panel.kv_plot.showing_empty_text
    legends = [item.name() for item in (panel.ttft_plot.curve(k) for k in panel.ttft_plot.curve_keys())]
    assert f"{name} p50" in legends and f"{name} p99" in legends
