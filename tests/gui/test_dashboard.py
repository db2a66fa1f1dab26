"""The live dashboard under the offscreen platform: tabs, curves, time ranges, empty states,
restored window state."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from app.buffers import LiveBuffers
from app.records import Health, HealthState, RequestRecord, Sample, labels_of
from app.runtime import Runtime
from app.summary import summarize
from widgets.main_window import MainWindow, panel_factories
from widgets.model_panel import ModelPanel
from widgets.overview_panel import NO_SERVER, OverviewPanel


@pytest.fixture
def window(qtbot, runtime: Runtime, tmp_path: Path):
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    w = MainWindow(runtime, settings)
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    return w


def test_every_tab_builds_and_refreshes(window: MainWindow) -> None:
    assert window.tabs.count() == len(panel_factories())
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles[:4] == ["Overview", "Servers", "vLLM", "llama.cpp"]  # the kinds' own tabs, from their table
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        window.refresh()
        assert window.tabs.tabText(i)


def test_published_samples_reach_the_curves(window: MainWindow, runtime: Runtime) -> None:
    overview = window.panel(OverviewPanel)
    now = time.time()
    gpu0 = labels_of(gpu="0")
    runtime.hub.publish([Sample("gpu_utilization_percent", float(v), now - 10 + i, gpu0)
                         for i, v in enumerate([5, 40, 97])])
    window.refresh()
    curve = overview.gpu_util_plot.curve(("gpu_utilization_percent", gpu0))
    assert curve.yData.tolist() == [5.0, 40.0, 97.0]
    assert curve.name() == "GPU 0"
    runtime.hub.publish([Sample("gpu_utilization_percent", 12.0, now, gpu0)])
    window.refresh()
    assert curve.yData[-1] == 12.0
    assert not overview.gpu_util_plot.showing_empty_text


def test_hidden_tabs_do_no_work(window: MainWindow, runtime: Runtime) -> None:
    overview = window.panel(OverviewPanel)
    window.tabs.setCurrentWidget(window.panel(ModelPanel))
    gpu0 = labels_of(gpu="0")
    runtime.hub.publish([Sample("gpu_utilization_percent", 50.0, time.time(), gpu0)])
    window.refresh()
    assert ("gpu_utilization_percent", gpu0) not in overview.gpu_util_plot.curve_keys()
    window.tabs.setCurrentWidget(overview)
    assert overview.gpu_util_plot.curve(("gpu_utilization_percent", gpu0)).yData.tolist() == [50.0]


def test_long_ranges_come_from_sqlite_downsampled_with_peaks(window: MainWindow, runtime: Runtime) -> None:
    overview = window.panel(OverviewPanel)
    plot = overview.gpu_memory_plot
    key = ("gpu_memory_used_bytes", labels_of(gpu="0"))
    now = time.time()
    day = [Sample(key[0], 8 * 2**30, now - 86400 + i, key[1]) for i in range(0, 86400, 2)]
    day[20_000] = Sample(key[0], 23.5 * 2**30, day[20_000].ts, key[1])  # one spike, 16 h ago
    runtime.store.put(day)
    runtime.store.flush()
    runtime.hub.publish([Sample(key[0], 9 * 2**30, now, key[1])])  # the live tail
    window.view.set_session_start(now - 2 * 86400)  # a session recording for two days

    queries = window.history.queries
    window.span_box.setCurrentIndex(3)  # 24 h
    window.refresh()
    curve = plot.curve(key)
    pixels = int(plot.getPlotItem().vb.width())
    assert window.history.queries > queries  # asked the database...
    assert len(curve.xData) <= 2 * max(pixels, 100) + 1  # ...for about one point pair per pixel
    assert curve.yData.max() == 23.5 * 2**30  # min/max buckets keep the spike
    assert curve.yData[-1] == 9 * 2**30  # and the live tail from the buffers follows
    assert curve.xData.min() >= now - 86400 - 1

    window.span_box.setCurrentIndex(0)  # 5 min
    window.refresh()
    recent = plot.curve(key)
    assert recent.xData.min() >= now - 301 and recent.yData[-1] == 9 * 2**30
    assert 23.5 * 2**30 not in recent.yData  # the spike lies outside the last 5 min
    assert plot.getPlotItem().vb.viewRange()[0][0] == pytest.approx(time.time() - 300, abs=5)


def test_pause_freezes_the_time_axis(window: MainWindow, runtime: Runtime, qtbot) -> None:
    plot = window.panel(OverviewPanel).system_plot
    runtime.hub.publish([Sample("system_cpu_percent", 20.0, time.time())])  # a chart with data scrolls
    window.refresh()
    window.pause_button.setChecked(True)
    frozen = plot.getPlotItem().vb.viewRange()[0]
    qtbot.waitUntil(lambda: time.time() > frozen[1] + 1.2, timeout=5000)
    window.refresh()
    assert plot.getPlotItem().vb.viewRange()[0] == pytest.approx(frozen)
    window.pause_button.setChecked(False)
    window.refresh()
    assert plot.getPlotItem().vb.viewRange()[0][1] > frozen[1] + 1


def test_empty_states_say_why(window: MainWindow, runtime: Runtime) -> None:
    overview = window.panel(OverviewPanel)
    window.refresh()
    assert overview.tokens_plot.showing_empty_text
    assert overview.tokens_plot.empty_text == NO_SERVER
    runtime.hub.publish([Health("gpu", HealthState.ABSENT, time.time(), kind="gpu",
                                reason="NVML Shared Library Not Found")])
    window.refresh()
    assert overview.gpu_util_plot.showing_empty_text
    assert "No NVIDIA GPU found" in overview.gpu_util_plot.empty_text
    assert "NVML Shared Library Not Found" in overview.gpu_util_plot.empty_text
    assert window.header.tiles["gpu"].value.text() == "no GPU"
    assert window.header.tiles["servers"].value.text() == "none"


def test_window_state_is_restored(qtbot, runtime: Runtime, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    first = MainWindow(runtime, settings)
    qtbot.addWidget(first)
    first.tabs.setCurrentIndex(1)
    first.span_box.setCurrentIndex(2)
    first.resize(700, 500)
    first.close()
    second = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.tabs.currentIndex() == 1
    assert second.span_box.currentText() == "6 h"
    assert second.view.span_s == 6 * 3600
    assert (second.width(), second.height()) == (700, 500)


def test_past_session_is_shown_read_only(window: MainWindow, runtime: Runtime) -> None:
    first = runtime.store.session_id
    runtime.store.begin_session("later")
    window.show_session(first)
    assert window.banner.isVisible() and f"session {first}" in window.banner.text()
    assert not window.span_box.isEnabled()
    t0, t1 = window.view.range(time.time() + 3600)
    assert t1 < time.time() + 1  # a past session does not scroll
    window.banner.click()
    assert window.view.live and not window.banner.isVisible()


def test_model_view_shows_a_models_requests(window: MainWindow, runtime: Runtime) -> None:
    now = time.time()
    window.view.set_session_start(now - 3600)  # the requests below lie inside the session
    runtime.store.put([
        RequestRecord(ts_start=now - 120, server="ollama", endpoint="/api/chat", model="llama3.2",
                      status=200, ttft_s=0.2, server_tokens_per_s=60.0),
        RequestRecord(ts_start=now - 60, server="ollama", endpoint="/api/chat", model="llama3.2",
                      status=200, ttft_s=0.3, server_tokens_per_s=30.0),
        RequestRecord(ts_start=now - 30, server="ollama", endpoint="/api/chat", model="llama3.2",
                      status=500, error_type="http"),
        RequestRecord(ts_start=now - 30, server="vllm", endpoint="/v1/chat/completions",
                      model="qwen", status=200, client_tokens_per_s=80.0)])
    runtime.store.flush()
    panel = window.panel(ModelPanel)
    window.tabs.setCurrentWidget(panel)
    window.refresh()
    assert [panel.picker.itemText(i) for i in range(panel.picker.count())] == ["llama3.2", "qwen"]
    panel.picker.setCurrentText("llama3.2")
    assert panel.speed.yData.tolist() == [60.0, 30.0]
    assert "3 requests, 1 errors" in panel.status.text()
    assert panel.count.opts["height"].sum() == 3 and panel.errors.opts["height"].sum() == 1


def test_summary_uses_only_fresh_values() -> None:
    buffers = LiveBuffers()
    now = 1000.0
    buffers.add([Sample("gpu_temperature_celsius", 70.0, now - 1, labels_of(gpu="0")),
                 Sample("gpu_temperature_celsius", 88.0, now - 2, labels_of(gpu="1")),
                 Sample("llm_tokens_per_second", 40.0, now - 100, labels_of(server="a")),
                 Sample("vllm_generation_tokens_per_second", 55.0, now - 1, labels_of(server="v"))])
    health = {"a": Health("a", HealthState.UP, now, kind="ollama"),
              "v": Health("v", HealthState.DOWN, now, kind="vllm")}
    s = summarize(buffers, health, now)
    assert (s.servers_up, s.servers_total) == (1, 2)
    assert s.gpu_temp_c == 88.0
    assert s.tokens_per_s == 55.0  # the proxy figure is 100 s old: not "now"
    assert s.alerts_firing is None
    assert summarize(buffers, health, now, ("critical", 2)).alerts_firing == 2
