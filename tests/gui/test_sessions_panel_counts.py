"""The Sessions list counts requests twice, each with its source: what went through llmmon, and
what the server's own counters saw (clients talking to it directly included). The real vLLM
collector polls the simulated server's recorded /metrics pages into the runtime's store."""
from __future__ import annotations

import time

from app.runtime import Runtime
from collectors.llamacpp import LlamaCppCollector
from collectors.vllm import VllmCollector
from tests.sim.llamacpp import SimLlamaServer
from tests.sim.llamacpp import page as llama_page
from tests.sim.vllm import SimVllm, page
from tests.support.clock import FakeClock
from tests.support.polling import counter_sum, poll_into
from tests.support.session_data import recorded_requests
from widgets.sessions_panel import COLUMNS, SessionsPanel


def test_requests_say_where_each_count_comes_from(qtbot, runtime: Runtime) -> None:
    served = int(counter_sum(page("metrics_v1_after_24_requests.txt"), "vllm:request_success_total")
                 - counter_sum(page("metrics_v1_idle.txt"), "vllm:request_success_total"))
    through_llmmon = recorded_requests()
    runtime.store.put(through_llmmon)
    clock = FakeClock(time.time())
    with SimVllm() as sim:
        collector = VllmCollector(sim.url, name="vllm@sim", clock=clock, monotonic=clock)
        poll_into(runtime.store, collector, clock, 2)
        sim.advance()  # the server served requests llmmon's proxy never saw
        poll_into(runtime.store, collector, clock, 2)
        collector.close()
    runtime.store.flush()
    panel = SessionsPanel(runtime)
    qtbot.addWidget(panel)
    panel.resize(1300, 400)
    panel.show()
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1 and bool(panel.server_counts), timeout=10_000)
    item = panel.table.item(0, COLUMNS.index("Requests"))
    assert item.text() == f"{len(through_llmmon)} via llmmon · ≈{served} seen by server"
    assert "vllm@sim" in item.toolTip() and "directly" in item.toolTip()


def test_a_llama_cpp_session_says_its_server_counts_tokens_only(qtbot, runtime: Runtime) -> None:
    clock = FakeClock(time.time())
    with SimLlamaServer() as sim:
        collector = LlamaCppCollector(sim.url, name="llama.cpp@sim", clock=clock, monotonic=clock)
        poll_into(runtime.store, collector, clock, 2)
        sim.advance()  # requests straight to the server, none through llmmon
        poll_into(runtime.store, collector, clock, 2)
        collector.close()
    runtime.store.flush()
    generated = int(counter_sum(llama_page("metrics_after"), "llamacpp:tokens_predicted_total")
                    + counter_sum(llama_page("metrics_after"), "llamacpp:prompt_tokens_total"))
    panel = SessionsPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1 and bool(panel.server_counts), timeout=10_000)
    requests = panel.table.item(0, COLUMNS.index("Requests"))
    assert requests.text() == "0 via llmmon · server counts tokens only"
    assert "llama.cpp's /metrics counts tokens only" in requests.toolTip()
    assert panel.table.item(0, COLUMNS.index("Tokens")).text() == f"0 via llmmon · {generated:,} seen by server"
