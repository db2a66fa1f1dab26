"""The llama.cpp and Servers tabs fed by the real collector polling a real llama-server
through the hub."""
from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.runtime import Runtime
from collectors.llamacpp import LlamaCppCollector
from tests.real_server.llama_server import ALIAS, LlamaServer
from widgets.llamacpp_panel import NO_LLAMACPP, LlamaCppPanel
from widgets.servers_panel import ServersPanel

SERVER = "llamacpp@panel"


def test_panel_says_there_is_no_server_before_one_is_seen(qtbot, runtime: Runtime) -> None:
    panel = LlamaCppPanel(runtime)
    qtbot.addWidget(panel)
    panel.refresh(time.time())
    assert all(p.showing_empty_text for p in panel.plots)
    assert panel.tokens_plot.empty_text == NO_LLAMACPP


def test_generation_on_the_real_server_shows_in_the_charts(qtbot, runtime: Runtime,
                                                           llama_server: LlamaServer,
                                                           tmp_path: Path) -> None:
    runtime.hub.add_collectors([LlamaCppCollector(llama_server.base_url, SERVER, interval=0.2)])
    runtime.start()
    panel = LlamaCppPanel(runtime)
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()

    def curve_values(plot, name: str) -> list[float]:
        panel.refresh(time.time())
        key = (name, (("server", SERVER),))
        if key not in plot.curve_keys() or plot.curve(key).yData is None:
            return []
        return plot.curve(key).yData.tolist()

    qtbot.waitUntil(lambda: curve_values(panel.slots_plot, "llamacpp_slots_total")[-1:] == [2.0])
    answer = httpx.post(f"{llama_server.base_url}/v1/chat/completions", timeout=30, json={
        "model": ALIAS, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64,
        "temperature": 0, "ignore_eos": True}).json()
    assert answer["usage"]["completion_tokens"] == 64
    qtbot.waitUntil(lambda: max(curve_values(panel.tokens_plot,
                                             "llamacpp_generation_tokens_per_second"), default=0) > 0,
                    timeout=10_000)
    assert not panel.tokens_plot.showing_empty_text
    panel.grab().save(str(tmp_path / "llamacpp_panel.png"))


def test_servers_tab_lists_the_llama_server_with_its_model(qtbot, runtime: Runtime,
                                                          llama_server: LlamaServer) -> None:
    runtime.hub.add_collectors([LlamaCppCollector(llama_server.base_url, SERVER, interval=0.2)])
    runtime.start()
    panel = ServersPanel(runtime)
    qtbot.addWidget(panel)

    def rows() -> list[list[str]]:
        panel.refresh(time.time())
        tree = panel.tree
        out = []
        for i in range(tree.topLevelItemCount()):
            item = tree.topLevelItem(i)
            out.append([item.text(c) for c in range(4)])
            out += [[item.child(j).text(c).strip() for c in range(3)] for j in range(item.childCount())]
        return out

    qtbot.waitUntil(lambda: len(rows()) == 2)
    (name, kind, version, status), model = rows()
    assert (name, kind, status) == (f"● {SERVER}", "llamacpp", "UP")
    assert version  # llama.cpp's build id
    assert model == [ALIAS, "", f"context {llama_server.context // llama_server.slots}"]
