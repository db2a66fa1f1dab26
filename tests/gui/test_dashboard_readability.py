"""What a user reads on the dashboard: legends beside the data (never on it) with current
values, time and value axes that survive a 1024×640 window, smoothing that changes only what is
drawn, a young session filling its charts, tabs only for the kinds of server present, and empty
charts that say what would fill them."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QPoint, QRect, QSettings, Qt
from PySide6.QtGui import QFontMetrics, QTransform
from PySide6.QtWidgets import QApplication

from app.records import Health, HealthState, Sample, labels_of
from app.runtime import Runtime
from tests.support import query
from tests.support.paint_counter import PaintCounter
from widgets.llamacpp_panel import LlamaCppPanel
from widgets.main_window import MainWindow
from widgets.overview_panel import OverviewPanel
from widgets.sessions_panel import SessionsPanel
from widgets.time_window import MIN_SPAN_S
from widgets.timeseries_plot import TimeSeriesPlot, area_columns, moving_average
from widgets.vllm_panel import VllmPanel

LLAMA = "llama.cpp@workstation"


@pytest.fixture
def window(qtbot, runtime: Runtime, tmp_path: Path) -> MainWindow:
    w = MainWindow(runtime, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    return w


def llama_cpp_minutes(runtime: Runtime, seconds: int = 120) -> float:
    """What a llama.cpp-only machine without a GPU records: server counters, CPU and memory,
    a spiky generation rate (llama.cpp adds tokens to its counter when a request ends)."""
    now = time.time()
    server = labels_of(server=LLAMA)
    records: list = [Health(LLAMA, HealthState.UP, now, kind="llamacpp", url="http://127.0.0.1:8080"),
                     Health("gpu", HealthState.ABSENT, now, kind="gpu", reason="NVML Shared Library Not Found")]
    for i in range(seconds):
        t = now - seconds + i + 1
        records += [Sample("llamacpp_generation_tokens_per_second", 25.0 * (i % 3 == 0), t, server),
                    Sample("llamacpp_requests_processing", float(i % 4 < 2), t, server),
                    Sample("system_cpu_percent", 20.0 + 60.0 * (i % 2), t),
                    Sample("system_memory_percent", 30.0 + i / 100, t)]
    runtime.hub.publish(records)
    return now


def widget_rect(plot: TimeSeriesPlot, item) -> QRect:
    """Where a plot's scene item lies, in the chart card's coordinates."""
    view = plot.plot_widget
    return view.mapFromScene(item.sceneBoundingRect()).boundingRect().translated(view.pos())


def tick_labels(axis, lo: float, hi: float, size: float) -> list[str]:
    """The major labels an axis draws over ``[lo, hi]`` when ``size`` pixels long (pyqtgraph
    draws finer levels only where they fit)."""
    spacing, values = axis.tickValues(lo, hi, size)[0]
    return axis.tickStrings([v for v in values if lo <= v <= hi], axis.scale, spacing)


def shown_plots(window: MainWindow) -> list[TimeSeriesPlot]:
    return [p for p in window.panel(OverviewPanel).shown if not p.showing_empty_text]


def test_legends_sit_under_the_data_with_current_values(window: MainWindow, runtime: Runtime) -> None:
    llama_cpp_minutes(runtime)
    window.refresh()
    QApplication.processEvents()
    overview = window.panel(OverviewPanel)
    for plot in shown_plots(window):
        legend = plot.legend
        assert legend.isVisible() and legend.rows
        assert not legend.geometry().intersects(widget_rect(plot, plot.view_box)), plot.title.text()
        assert legend.geometry().top() >= widget_rect(plot, plot.getPlotItem().getAxis("bottom")).bottom()
    cpu = next(r for r in overview.system_plot.legend.rows if r.label == "CPU")
    assert (cpu.last, cpu.min, cpu.max) == ("80.0 %", "20.0 %", "80.0 %")  # the latest value, the range's extremes
    assert cpu.mean == "50.0 %"
    # one server: named once above the rows, the rows say what each series is
    assert overview.requests_plot.legend.heading == LLAMA
    assert [r.label for r in overview.requests_plot.legend.rows] == ["processing"]


def test_axes_stay_readable_at_1024_by_640(window: MainWindow, runtime: Runtime) -> None:
    llama_cpp_minutes(runtime)
    window.resize(1024, 640)
    window.refresh()
    QApplication.processEvents()
    assert (window.width(), window.height()) == (1024, 640)  # the layout fits: nothing pushed off-screen
    image = window.grab().toImage()
    assert (image.width(), image.height()) == (1024, 640)
    QApplication.processEvents()  # axes size themselves to the labels they have drawn
    assert len(window.panel(OverviewPanel).shown) == 4  # no GPU charts on a machine without a GPU
    plots = shown_plots(window)
    assert len(plots) == 3  # tokens, requests, CPU (TTFT says why it is empty)
    for plot in plots:
        item = plot.getPlotItem()
        bottom, left = item.getAxis("bottom"), item.getAxis("left")
        name = plot.title.text()
        assert bottom.isVisible() and left.isVisible(), name
        font = QFontMetrics(bottom.style["tickFont"] or plot.font())
        assert bottom.height() >= font.height(), f"{name}: time axis {bottom.height()} px tall"
        (t0, t1), (y0, y1) = plot.view_box.viewRange()
        values = tick_labels(left, y0, y1, left.height())
        assert values and left.width() >= max(font.horizontalAdvance(v) for v in values), f"{name}: values cut"
        assert plot.view_box.height() >= 60 and plot.view_box.width() >= 200, name
        on_screen = QRect(plot.mapTo(window, widget_rect(plot, bottom).topLeft()), widget_rect(plot, bottom).size())
        assert window.rect().contains(on_screen), f"{name}: time axis outside the window"
        times = tick_labels(bottom, t0, t1, bottom.width())
        assert len(times) >= 2, f"{name}: time labels {times}"


def test_smoothing_changes_what_is_drawn_not_what_is_stored(window: MainWindow, runtime: Runtime) -> None:
    llama_cpp_minutes(runtime)
    key = ("system_cpu_percent", ())
    window.refresh()
    curve = window.panel(OverviewPanel).system_plot.curve(key)
    raw = curve.yData.copy()
    assert set(raw.tolist()) == {20.0, 80.0}  # a 1 Hz zigzag

    window.smooth_button.setChecked(True)  # the toolbar toggle: 5 points
    window.refresh()
    smoothed = curve.yData
    assert len(smoothed) == len(raw) and not np.array_equal(smoothed, raw)
    assert smoothed[10:-10].max() - smoothed[10:-10].min() < 20  # the zigzag reads as its trend
    assert window.panel(OverviewPanel).system_plot.legend.rows[0].max == "80.0 %"  # figures stay recorded
    since = float(curve.xData[0])
    _ts, buffered = runtime.hub.buffers.window(key, since=since)
    assert np.array_equal(buffered, raw)  # the live data is untouched
    runtime.store.flush()
    stored = query(runtime.store.path, "SELECT value FROM samples JOIN series ON series.id = series_id "
                                       "WHERE name='system_cpu_percent' AND ts >= ? ORDER BY ts", (since,))
    assert [v for (v,) in stored] == raw.tolist()  # and so is the database

    window.smooth_button.setChecked(False)
    window.refresh()
    assert np.array_equal(curve.yData, raw)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1e6), st.just(math.nan)), min_size=0, max_size=60), st.integers(1, 20))
def test_moving_average_keeps_holes_and_stays_within_each_run(values: list[float], n: int) -> None:
    data = np.array(values, dtype=float)
    before = data.copy()
    out = moving_average(data, n)
    assert np.array_equal(np.isnan(out), np.isnan(data))  # a hole stays a hole, nothing new is missing
    assert np.array_equal(data, before, equal_nan=True)   # the input is left as it is
    runs = np.split(np.arange(len(data)), np.flatnonzero(np.isnan(data)))
    for run in runs:
        run = run[~np.isnan(data[run])]
        if len(run):  # an average never leaves the range of its own run: no bleeding across holes
            assert data[run].min() - 1e-6 <= out[run].min() and out[run].max() <= data[run].max() + 1e-6


def test_a_young_session_fills_the_range_from_its_start(window: MainWindow, runtime: Runtime, qtbot) -> None:
    plot = window.panel(OverviewPanel).system_plot
    now = time.time()
    runtime.hub.publish([Sample("system_cpu_percent", 20.0, now)])
    window.view.set_session_start(now - 120)  # two minutes old, the range is 5 min
    window.refresh()
    assert plot.view_box.viewRange()[0][0] == pytest.approx(now - 120, abs=2)
    window.view.set_session_start(now - 3 * 3600)  # older than the range: the last 5 min
    window.refresh()
    assert plot.view_box.viewRange()[0][0] == pytest.approx(time.time() - 300, abs=2)

    sessions = window.panel(SessionsPanel)
    window.tabs.setCurrentWidget(sessions)
    sessions.new_button.click()  # a new session: the charts start again from its start
    qtbot.waitUntil(lambda: window.view.session_start is not None and window.view.session_start > now,
                    timeout=10_000)
    t0, t1 = window.view.range(time.time())
    assert t1 - t0 == pytest.approx(MIN_SPAN_S)  # seconds old: one readable minute, not a 5-min sliver


def test_tabs_only_for_the_kinds_of_server_present(window: MainWindow, runtime: Runtime) -> None:
    tabs = window.tabs
    vllm, llama = tabs.indexOf(window.panel(VllmPanel)), tabs.indexOf(window.panel(LlamaCppPanel))
    window.refresh()
    assert not tabs.isTabVisible(vllm) and not tabs.isTabVisible(llama)
    llama_cpp_minutes(runtime, 5)
    window.refresh()
    assert tabs.isTabVisible(llama) and not tabs.isTabVisible(vllm)
    assert window.shelf.button.isVisible()  # the vLLM tab waits in "More"
    assert [a.text() for a in window.shelf.menu.actions()] == ["vLLM (no vLLM server seen yet)"]
    runtime.hub.publish([Health("vllm@box", HealthState.UP, time.time(), kind="vllm")])  # a vLLM server appears
    window.refresh()
    assert tabs.isTabVisible(vllm) and not window.shelf.button.isVisible()


def test_a_shelved_tab_opens_from_the_more_menu(window: MainWindow) -> None:
    window.refresh()
    vllm = window.tabs.indexOf(window.panel(VllmPanel))
    action = next(a for a in window.shelf.menu.actions() if a.text().startswith("vLLM"))
    action.trigger()
    assert window.tabs.isTabVisible(vllm) and window.tabs.currentIndex() == vllm
    window.refresh()  # stays open though no vLLM server exists, and says so once, not per chart
    panel = window.panel(VllmPanel)
    assert window.tabs.isTabVisible(vllm)
    assert panel.note.isVisible() and "No vLLM server found" in panel.note.text()
    assert not panel.charts.isVisible()


def test_empty_ttft_chart_says_what_would_fill_it(window: MainWindow, runtime: Runtime) -> None:
    llama_cpp_minutes(runtime)
    window.refresh()
    overview = window.panel(OverviewPanel)
    assert not overview.tokens_plot.showing_empty_text  # generation is shown...
    assert overview.ttft_plot.showing_empty_text        # ...TTFT is not, and the chart says why
    text = overview.ttft_plot.empty_text
    assert "llama.cpp reports none" in text
    assert "proxy" in text and "vLLM" in text
    assert "No generation yet" not in text


def test_clicking_a_legend_row_hides_and_shows_its_series(qtbot, window: MainWindow, runtime: Runtime) -> None:
    llama_cpp_minutes(runtime)
    window.refresh()
    QApplication.processEvents()
    plot = window.panel(OverviewPanel).system_plot
    legend = plot.legend
    row = next(i for i, r in enumerate(legend.rows) if r.label == "CPU")
    at = QPoint(40, int((row + 1.5) * legend.fontMetrics().height()))  # below the header line
    assert legend.row_at(at.y()) == row
    qtbot.mouseClick(legend, Qt.MouseButton.LeftButton, pos=at)
    assert not plot.curve(("system_cpu_percent", ())).isVisible() and legend.rows[row].hidden
    assert plot.getPlotItem().vb.viewRange()[1][1] == pytest.approx(100, abs=3)  # fixed 0-100 % axis
    qtbot.mouseClick(legend, Qt.MouseButton.LeftButton, pos=at)
    assert plot.curve(("system_cpu_percent", ())).isVisible() and not legend.rows[row].hidden


def test_shading_follows_the_line_and_stops_at_gaps() -> None:
    # 1 value unit = 1 pixel up, 1 s = 10 pixels right; the value 0 is at y = 100
    to_pixels = QTransform(10, 0, 0, -1, 0, 100)
    ts = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    values = np.array([10.0, 10.0, 50.0, np.nan, 20.0, 20.0, 20.0])  # a hole at t=3
    first, tops, base = area_columns(ts, values, to_pixels, None)
    assert first == 0 and base == 100
    column = {int(first + i): top for i, top in enumerate(tops)}
    assert column[5] == pytest.approx(90)   # under the line at 10
    assert column[15] == pytest.approx(68)  # on the rise to 50 (column centre at t = 1.55: 32)
    assert all(math.isnan(column[c]) for c in range(21, 40))  # no shading across the hole
    assert column[45] == pytest.approx(80)
    spike = area_columns(np.array([0.0, 0.01, 0.02, 5.0]), np.array([0.0, 90.0, 0.0, 0.0]), to_pixels, None)
    assert spike[1][0] == pytest.approx(10)  # a spike inside one pixel column still shades up to its peak


def test_an_empty_chart_stands_still_and_shows_the_range_once_data_comes(window: MainWindow,
                                                                         runtime: Runtime) -> None:
    """An empty chart is a message: its hidden axes do not scroll each second (a repaint the idle
    window paid for nothing). The first point brings the range the other charts show."""
    overview = window.panel(OverviewPanel)
    ttft = overview.ttft_plot
    window.refresh()
    QApplication.processEvents()
    assert ttft.showing_empty_text
    counter = PaintCounter(ttft.plot_widget.viewport())
    x_range = ttft.view_box.viewRange()[0]
    for second in range(1, 4):  # three ticks, a second apart
        overview.refresh(time.time() + second)
        QApplication.processEvents()
    assert ttft.view_box.viewRange()[0] == x_range
    assert counter.paints == 0
    now = time.time()
    runtime.hub.publish([Sample("llm_ttft_seconds", 0.35, now, labels_of(server=LLAMA, quantile="0.5")),
                         Sample("system_cpu_percent", 20.0, now)])
    window.refresh()
    assert not ttft.showing_empty_text and not overview.system_plot.showing_empty_text
    assert ttft.view_box.viewRange()[0][1] == pytest.approx(now, abs=5)
    assert ttft.view_box.viewRange()[0] == pytest.approx(overview.system_plot.view_box.viewRange()[0], abs=2)
