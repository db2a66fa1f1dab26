"""The prompt test: real HTTP to the simulated servers replaying recorded real streams, the same
meter as the proxy, and the Prompt test tab."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QLabel

from app.prompt_runner import PromptRequest, PromptRun, PromptTarget
from app.records import Health, HealthState, RequestRecord, Sample, labels_of
from app.runtime import Runtime
from tests.sim.upstream import SimUpstream, chunks_of
from tests.support import query, wait_until
from widgets.main_window import MainWindow
from widgets.prompt_panel import INTRO, NO_MODELS, PromptPanel


@pytest.fixture
def upstream():
    with SimUpstream() as up:
        yield up


def ollama_recording() -> tuple[str, dict]:
    """The text and the final ``done`` object of the recorded Ollama chat stream."""
    objs = [json.loads(line) for line in chunks_of("ollama_chat_stream.ndjson")]
    # the docs' final object carries the counts and no "message"
    return "".join(o.get("message", {}).get("content", "") for o in objs), objs[-1]


def sse_recording(name: str) -> tuple[str, dict | None]:
    text, usage = "", None
    for event in chunks_of(name):
        payload = event.strip()[5:].strip()
        if payload == b"[DONE]":
            continue
        obj = json.loads(payload)
        for choice in obj.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
        usage = obj.get("usage") or usage
    return text, usage


def run_to_end(target: PromptTarget, req: PromptRequest, publish=None) -> tuple[RequestRecord, str]:
    pieces: list[str] = []
    done = threading.Event()
    run = PromptRun(target, req, publish, on_text=pieces.append, on_done=lambda _r: done.set())
    run.start()
    assert done.wait(30)
    return run.record, "".join(pieces)


def test_ollama_prompt_streams_the_text_and_keeps_the_servers_counts(upstream: SimUpstream) -> None:
    expected_text, final = ollama_recording()
    published: list = []
    rec, text = run_to_end(PromptTarget("ollama@sim", upstream.url, "ollama", "llama3.2"),
                           PromptRequest("Why is the sky blue?", system="Be brief", temperature=0, seed=7),
                           published.extend)
    sent = json.loads(upstream.requests[0].body)
    assert upstream.requests[0].path == "/api/chat"
    assert sent["messages"] == [{"role": "system", "content": "Be brief"},
                                {"role": "user", "content": "Why is the sky blue?"}]
    assert sent["options"] == {"temperature": 0, "seed": 7}
    assert text == expected_text and rec.response_text == expected_text
    assert rec.completion_tokens == final["eval_count"] and not rec.tokens_estimated
    assert rec.prompt_tokens == final.get("prompt_eval_count")
    assert rec.server_tokens_per_s == pytest.approx(final["eval_count"] / final["eval_duration"] * 1e9)
    assert rec.source == "prompt_test" and rec.status == 200 and rec.ok
    assert rec.ttft_s is not None and 0 < rec.ttft_s <= rec.latency_s
    assert published == [rec]


def test_openai_prompt_asks_for_usage_and_reports_it(upstream: SimUpstream) -> None:
    expected_text, usage = sse_recording("vllm_stream.sse")
    rec, text = run_to_end(PromptTarget("vllm@sim", upstream.url, "vllm", "tiny-llama"),
                           PromptRequest("hello", max_tokens=48))
    sent = json.loads(upstream.requests[0].body)
    assert sent["stream_options"] == {"include_usage": True} and sent["max_tokens"] == 48
    assert text == expected_text
    assert (rec.prompt_tokens, rec.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_cancel_stops_the_stream_at_once(upstream: SimUpstream) -> None:
    upstream.chunk_delay_s = 30.0  # the server goes quiet after the first chunk
    pieces: list[str] = []
    done = threading.Event()
    run = PromptRun(PromptTarget("ollama@sim", upstream.url, "ollama", "llama3.2"), PromptRequest("hi"),
                    on_text=pieces.append, on_done=lambda _r: done.set())
    run.start()
    wait_until(lambda: pieces, what="the first text")
    run.cancel()
    assert done.wait(10)
    assert run.record.error_type == "cancelled"
    wait_until(lambda: upstream.open_connections() == 0, what="the connection to the server to close")
    assert not upstream.requests[0].completed


def test_server_down_is_a_clear_error() -> None:
    rec, text = run_to_end(PromptTarget("ollama@gone", "http://127.0.0.1:9", "ollama", "m"),
                           PromptRequest("hi"))
    assert rec.error_type == "upstream_down" and "ConnectError" in rec.error
    assert text == "" and not rec.ok


def test_panel_runs_two_models_side_by_side(qtbot, upstream: SimUpstream, runtime: Runtime,
                                            db_file: Path) -> None:
    now = time.time()
    runtime.hub.publish([
        Health("ollama@sim", HealthState.UP, now, kind="ollama", url=upstream.url),
        Sample("llm_model_loaded", 1.0, now, labels_of(server="ollama@sim", model="llama3.2")),
        Sample("llm_model_loaded", 1.0, now, labels_of(server="ollama@sim", model="mistral"))])
    panel = PromptPanel(runtime)
    qtbot.addWidget(panel)
    panel.refresh(now)
    assert panel.targets.count() == 2 and panel.guide.text() == INTRO
    for i in range(2):
        panel.targets.item(i).setCheckState(panel.targets.item(i).checkState().Checked)
    panel.prompt.setPlainText("Why is the sky blue?")
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.run_button.isEnabled(), timeout=20_000)
    expected_text, final = ollama_recording()
    assert [c.answer.toPlainText() for c in panel.cards] == [expected_text, expected_text]
    assert all(f"→ {final['eval_count']} tokens" in c.figures.text() for c in panel.cards)
    assert panel.history.rowCount() == 2
    runtime.store.flush()
    rows = query(db_file, "SELECT model, source, prompt_text FROM requests ORDER BY model")
    assert rows == [("llama3.2", "prompt_test", "Why is the sky blue?"),
                    ("mistral", "prompt_test", "Why is the sky blue?")]
    # opened again (a restart): the history comes back from the database
    again = PromptPanel(runtime)
    qtbot.addWidget(again)
    again.refresh(time.time())
    shown = sorted([again.history.item(r, c).text() for c in (1, 4, 5)] for r in range(again.history.rowCount()))
    assert shown == [[m, str(final["eval_count"]), "Why is the sky blue?"] for m in ("llama3.2", "mistral")]


def test_panel_says_why_it_has_no_models(qtbot, runtime: Runtime) -> None:
    panel = PromptPanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    panel.refresh(time.time())
    assert panel.targets.count() == 0 and panel.guide.isVisible()
    assert "No model to test" in panel.guide.text()
    panel.run_button.click()  # Run with nothing to run says so, still in the pane with room
    assert panel.guide.isVisible() and panel.guide.text() == NO_MODELS and not panel.cards


@pytest.mark.parametrize("height", [640, 0])  # 0: as short as the window goes (a 1024×640 screen's title bar)
def test_every_label_shows_whole_at_1024_by_640(qtbot, runtime: Runtime, tmp_path: Path, height: int) -> None:
    window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show_panel(PromptPanel)
    window.resize(1024, height or window.minimumSizeHint().height())
    window.show()
    window.refresh()
    QApplication.processEvents()
    panel = window.panel(PromptPanel)
    assert "No model to test" in panel.guide.text()
    shown = [label for label in panel.findChildren(QLabel) if label.isVisible() and label.text()]
    assert panel.guide in shown
    for label in shown:
        needed = label.heightForWidth(label.width()) if label.wordWrap() else label.sizeHint().height()
        assert label.height() >= needed, f"{label.text()[:40]!r}: {label.height()} of {needed} px tall"
        assert label.visibleRegion().boundingRect() == label.rect(), f"{label.text()[:40]!r} cut by its pane"
