"""The Fleet tab, reading the real Prometheus that scrapes the two agents: the machines with their
servers, models, GPU state and alerts; a machine's charts drawn from Prometheus with the values
that machine recorded; and a Prometheus that hangs or goes away shown as such, without the tab
ever waiting for it. Screenshots of the tab are kept in ``artifacts/screenshots/``."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.config import PrometheusSource, Settings
from app.runtime import Runtime
from tests.gui.test_screenshots import ARTIFACTS, distinct_colours
from tests.prometheus.conftest import Fleet
from tests.prometheus.prometheus import PrometheusServer
from tests.prometheus.test_scrape import chat, stored_values
from tests.sim.server import HANG, SimServer
from widgets.fleet_panel import FleetPanel
from widgets.main_window import MainWindow


def cells(panel: FleetPanel, instance: str) -> dict[str, str]:
    table = panel.machines
    for row in range(table.rowCount()):
        if table.item(row, 0).text() == instance:
            return {table.horizontalHeaderItem(c).text(): table.item(row, c).text() for c in range(table.columnCount())}
    return {}


def alert_rows(panel: FleetPanel) -> set[tuple[str, str]]:
    return {(panel.alerts.item(r, 0).text(), panel.alerts.item(r, 2).text()) for r in range(panel.alerts.rowCount())}


def points(plot, key) -> int:
    data = plot.curve(key).yData if key in plot.curve_keys() else None
    return 0 if data is None else len(data)


def ticking(panel: FleetPanel, check) -> bool:
    """One UI tick of the tab (as the window's timer does), then the check."""
    panel.refresh(time.time())
    return bool(check())


@pytest.fixture
def fleet_runtime(prometheus: PrometheusServer, db_file: Path):
    runtime = Runtime.create(db_file, Settings(discover_local=False, prometheus=[PrometheusSource(prometheus.url)]))
    yield runtime
    runtime.stop()


def test_fleet_tab_lists_machines_and_draws_one_machines_charts(qtbot, fleet: Fleet, fleet_runtime: Runtime,
                                                                  tmp_path: Path) -> None:
    chat(fleet.proxy_url, 2)  # gpu-box-b generates: tokens/s and TTFT on its charts
    window = MainWindow(fleet_runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    panel = window.panel(FleetPanel)
    window.tabs.setCurrentWidget(panel)
    window.show()
    expected = {("gpu-box-a", "Model partly offloaded to CPU"), ("gpu-box-a", "vLLM requests waiting")}
    qtbot.waitUntil(lambda: ticking(panel, lambda: cells(panel, "gpu-box-a") and cells(panel, "gpu-box-b")
                                    and expected <= alert_rows(panel)), timeout=30_000)
    a, b = cells(panel, "gpu-box-a"), cells(panel, "gpu-box-b")
    assert a["Scraped"] == "up" and a["LLM servers"] == f"{fleet.server('ollama')}, {fleet.server('vllm')}"
    assert a["Models"] == "gemma4, mistral:latest, tiny-llama"  # /api/ps and /v1/models
    assert a["GPU use"] == a["GPU memory"] == "no GPU"  # this machine has none, nor NVML
    assert b["LLM servers"] == fleet.server("llamacpp") and b["Models"] == "tiny"
    assert panel.status.text().startswith(f"Prometheus at {fleet_runtime.settings.prometheus[0].url}: ")
    assert a["Alerts"].endswith(" firing")

    assert panel.select_machine("gpu-box-a")
    cpu_plot = panel.charts[-1]
    cpu = ("system_cpu_percent", ())
    qtbot.waitUntil(lambda: ticking(panel, lambda: points(cpu_plot, cpu) >= 3), timeout=30_000)
    # every point of the chart is a value gpu-box-a itself recorded in its database
    drawn = {float(v) for v in cpu_plot.curve(cpu).yData if v == v}  # NaN marks a gap
    assert drawn <= stored_values(fleet.a.db, "system_cpu_percent", {})
    queue = panel.charts[2]
    waiting = ("vllm_requests_waiting",
               (("model", "meta-llama/Llama-3.1-8B-Instruct"), ("server", fleet.server("vllm"))))
    qtbot.waitUntil(lambda: ticking(panel, lambda: points(queue, waiting) > 0), timeout=30_000)
    assert {float(v) for v in queue.curve(waiting).yData if v == v} == {1.0}  # NaN: a gap in the scrapes

    assert panel.select_machine("gpu-box-b")
    speed = panel.charts[0]
    qtbot.waitUntil(lambda: ticking(panel, lambda: any(k[0] == "llamacpp_generation_tokens_per_second"
                                                       for k in speed.curve_keys())), timeout=30_000)
    assert not any(k[0].startswith("vllm_") for p in panel.charts for k in p.curve_keys())  # box-a's are gone

    window.span_box.setCurrentIndex(1)  # "1 h": the charts ask Prometheus for the new range
    qtbot.waitUntil(lambda: ticking(panel, lambda: panel.poller().history() is not None
                                    and panel.poller().history().end - panel.poller().history().start == 3600),
                    timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    QApplication.processEvents()
    image = window.grab().toImage()
    assert image.save(str(ARTIFACTS / "fleet_1600x1000.png"))
    assert distinct_colours(image) > 20
    window.close()


def test_a_hanging_then_absent_prometheus_shows_as_such_and_never_blocks(qtbot, db_file: Path) -> None:
    with SimServer() as sim:
        sim.set_fault(HANG)  # accepts the question and never answers
        runtime = Runtime.create(db_file, Settings(discover_local=False,
                                                   prometheus=[PrometheusSource(sim.url, timeout_s=1.0)]))
        panel = FleetPanel(runtime)
        qtbot.addWidget(panel)
        try:
            panel.refresh(time.time())
            qtbot.waitUntil(lambda: bool(sim.requests), timeout=10_000)
            panel.refresh(time.time())  # while the question hangs, the tab still answers
            assert panel.status.text().startswith(f"Asking Prometheus at {sim.url}…")
            qtbot.waitUntil(lambda: ticking(panel, lambda: "is not answering: no answer within 1 s"
                                            in panel.status.text()), timeout=10_000)
            sim.go_down()
            qtbot.waitUntil(lambda: ticking(panel, lambda: "is not answering: cannot connect (Connection refused)"
                                            in panel.status.text()), timeout=20_000)
            assert panel.machines.rowCount() == 0
        finally:
            panel.shutdown()
            runtime.stop()


def test_prometheus_going_away_keeps_the_last_reading(qtbot, db_file: Path, tmp_path: Path) -> None:
    own = PrometheusServer(tmp_path / "prometheus").start()  # its own: this test stops it
    runtime = Runtime.create(db_file, Settings(discover_local=False, prometheus=[PrometheusSource(own.url)]))
    panel = FleetPanel(runtime)
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: ticking(panel, lambda: ": 0 machines, read at" in panel.status.text()),
                        timeout=20_000)
        own.stop()
        qtbot.waitUntil(lambda: ticking(panel, lambda: "is not answering: cannot connect" in panel.status.text()),
                        timeout=20_000)
        assert "Showing the last reading, from " in panel.status.text()
        assert "font-weight: bold" in panel.status.styleSheet()
    finally:
        panel.shutdown()
        own.stop()
        runtime.stop()


def test_without_a_prometheus_the_tab_says_how_to_get_one(qtbot, runtime: Runtime) -> None:
    panel = FleetPanel(runtime)
    qtbot.addWidget(panel)
    panel.refresh(time.time())
    assert "No Prometheus configured" in panel.status.text() and "[[prometheus]]" in panel.status.text()
    assert panel.poller() is None and panel.body.isHidden()
