"""The Prompt test tab against the real llama-server: the model is found by the real collector,
the answer streams in, and the figures are the server's own ``usage``/``timings``."""
from __future__ import annotations

import time

import httpx
from PySide6.QtCore import Qt

from app.runtime import Runtime
from collectors.llamacpp import LlamaCppCollector
from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.support import query
from widgets.prompt_panel import PromptPanel

SERVER = "llamacpp@prompt"


def test_prompt_panel_shows_the_real_answer_and_figures(qtbot, runtime: Runtime,
                                                        llama_server: LlamaServer) -> None:
    runtime.hub.add_collectors([LlamaCppCollector(llama_server.base_url, SERVER, interval=0.2)])
    runtime.start()
    panel = PromptPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    def one_target() -> bool:
        panel.refresh(time.time())
        return panel.targets.count() == 1
    qtbot.waitUntil(one_target, timeout=10_000)
    assert panel.targets.item(0).checkState() == Qt.CheckState.Checked  # the only model: ticked
    panel.prompt.setPlainText("Tell me about llamas")
    panel.temperature.setValue(0.0)
    panel.seed.setValue(42)
    panel.max_tokens.setValue(32)
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.run_button.isEnabled(), timeout=30_000)

    direct = httpx.post(f"{llama_server.base_url}/v1/chat/completions", timeout=30, json={
        "model": ALIAS, "messages": [{"role": "user", "content": "Tell me about llamas"}],
        "temperature": 0.0, "seed": 42, "max_tokens": 32}).json()
    card = panel.cards[0]
    assert card.answer.toPlainText() == direct["choices"][0]["message"]["content"]
    record = panel.runs[0].record
    assert record.completion_tokens == direct["usage"]["completion_tokens"] == 32
    assert not record.tokens_estimated
    assert record.server_tokens_per_s is not None and record.server_tokens_per_s > 0
    assert "→ 32 tokens" in card.figures.text() and "TTFT" in card.figures.text()
    runtime.store.flush()
    assert query(runtime.store.path, "SELECT model, completion_tokens, source FROM requests") == [
        (ALIAS, 32, "prompt_test")]
