"""The prompt test card while the answer still streams: TTFT shows as soon as the first text
arrives and a running tokens/s follows, then the server's own figures replace them. Real HTTP
to the simulated server pacing a recorded llama-server stream."""
from __future__ import annotations

import time

import pytest

from app.records import Health, HealthState, Sample, labels_of
from app.runtime import Runtime
from app.units import format_value
from tests.sim.upstream import SimUpstream
from widgets.prompt_panel import PromptPanel

LLAMA_ROUTES = {"/v1/chat/completions": ("llamaserver_stream.sse", "llamaserver_chat.json", False)}


@pytest.fixture
def slow_llama():
    """A llama-server replay that sends one token every 50 ms (about 2.5 s for the answer)."""
    with SimUpstream(LLAMA_ROUTES) as up:
        up.chunk_delay_s = 0.05
        yield up


def test_card_shows_ttft_and_speed_while_the_answer_streams(qtbot, slow_llama: SimUpstream,
                                                           runtime: Runtime) -> None:
    now = time.time()
    runtime.hub.publish([Health("llama.cpp@sim", HealthState.UP, now, kind="llamacpp", url=slow_llama.url),
                         Sample("llm_model_loaded", 1.0, now, labels_of(server="llama.cpp@sim", model="gemma"))])
    panel = PromptPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    panel.refresh(now)
    panel.prompt.setPlainText("Why is the sky blue?")
    panel.run_button.click()
    card = panel.cards[0]
    assert card.figures.text() == "waiting for the first token…"

    seen: dict[str, object] = {}

    def live_figures_shown() -> bool:
        text = card.figures.text()
        if "TTFT" in text and "tokens/s so far" in text:
            seen.update(text=text, streaming=not slow_llama.requests[0].completed,
                        answer=card.answer.toPlainText())
            return True
        return False

    qtbot.waitUntil(live_figures_shown, timeout=10_000)
    assert seen["streaming"], "the figures must show while the stream is still open"
    assert seen["answer"], "and the text streams in alongside them"
    qtbot.waitUntil(panel.run_button.isEnabled, timeout=20_000)
    rec = panel.runs[0].record
    # the live TTFT was the meter's own figure, on the same clock
    assert f"TTFT {format_value(rec.ttft_s, 's')}" in str(seen["text"])
    final = card.figures.text()
    assert "so far" not in final and "(server)" in final  # llama-server's own decode speed
    assert f"→ {rec.completion_tokens} tokens" in final
