"""Every tab rendered to PNG with data from the simulated servers (real collectors polling real
HTTP) and prompt runs through the real meter. The PNGs are kept in ``artifacts/screenshots/``
for people to look at; the test checks each tab drew something, not pixels."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from app.config import ServerEntry, Settings
from app.prompt_runner import PromptRequest, PromptRun, PromptTarget
from app.records import RequestRecord
from app.runtime import Runtime
from tests.sim.ollama import SimOllama
from tests.sim.upstream import SimUpstream
from tests.sim.vllm import SimVllm
from widgets.main_window import MainWindow
from widgets.theme import apply_colour_scheme

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def distinct_colours(image: QImage, step: int = 7) -> int:
    return len({image.pixel(x, y) for x in range(0, image.width(), step)
                for y in range(0, image.height(), step)})


@pytest.fixture
def sims():
    with SimOllama() as ollama, SimVllm() as vllm, SimUpstream() as upstream:
        ollama.load(SimOllama.partially_offloaded_model())
        yield ollama, vllm, upstream


def test_every_tab_renders_with_simulated_servers(qtbot, sims, db_file: Path, tmp_path: Path) -> None:
    ollama, vllm, upstream = sims
    settings = Settings(system_interval_s=0.5, discover_local=False, servers=[
        ServerEntry(url=ollama.url, kind="ollama", name="ollama@workstation"),
        ServerEntry(url=vllm.url, kind="vllm", name="vllm@workstation")])
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_colour_scheme(app)  # as the app does at start-up
    runtime = Runtime.create(db_file, settings)
    try:
        window = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(window)
        window.resize(1400, 900)
        window.show()
        runtime.start()
        health = runtime.hub.health
        ollama_id, vllm_id = f"ollama@127.0.0.1:{ollama.port}", f"vllm@127.0.0.1:{vllm.port}"  # shown by name
        qtbot.waitUntil(lambda: {ollama_id, vllm_id} <= set(health), timeout=15_000)
        vllm.advance()  # 24 requests served between two scrapes: rates and percentiles appear
        qtbot.waitUntil(lambda: bool(runtime.hub.buffers.find("vllm_ttft_seconds")), timeout=15_000)
        done = threading.Barrier(4)

        def finished(_record: RequestRecord) -> None:
            done.wait(10)
        for model in ("llama3.2", "mistral:latest", "gemma4"):
            PromptRun(PromptTarget(ollama_id, upstream.url, "ollama", model),
                      PromptRequest("Why is the sky blue?"), runtime.hub.publish,
                      on_done=finished).start()
        done.wait(20)
        qtbot.waitUntil(lambda: bool(runtime.hub.buffers.find("llm_tokens_per_second")), timeout=15_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i in range(window.tabs.count()):
            window.tabs.setCurrentIndex(i)
            window.refresh()
            QApplication.processEvents()  # lay the tab out before grabbing it
            image = window.grab().toImage()
            name = window.tabs.tabText(i).replace(" ", "_").replace(".", "").lower()
            assert image.save(str(ARTIFACTS / f"{i:02d}_{name}.png"))
            assert distinct_colours(image) > 20, f"tab {name!r} rendered (almost) blank"
        assert window.header.tiles["servers"].value.text() == "2 / 2"
        assert window.header.tiles["gpu"].value.text() == "no GPU"
    finally:
        runtime.stop()
