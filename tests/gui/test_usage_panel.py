"""The Usage tab and the benchmark window as a user drives them: the table holds the report's
figures and sorts by number, "per server" adds models up, the CSV export writes the lines, the
trends page marks a recorded version change; a benchmark against the simulated server fills
the results and two runs compare with a verdict."""
from __future__ import annotations

import csv
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.prompt_runner import PromptTarget
from app.records import Event, RequestRecord, labels_of
from app.runtime import Runtime
from app.usage.report import usage_report
from tests.sim.upstream import SimUpstream
from widgets.benchmark_dialog import BenchmarkDialog
from widgets.usage_panel import COLUMNS, UsagePanel

SERVERS = ("ollama@127.0.0.1:11434", "vllm@127.0.0.1:8000")


def fill(runtime: Runtime) -> None:
    """A week of requests on two servers, and an Ollama update on the fourth day."""
    today = datetime.combine(datetime.now().date(), datetime.min.time())
    records, events = [], []
    for day in range(7):
        start = today - timedelta(days=day) + timedelta(hours=9)
        for i in range(12):
            ts = min((start + timedelta(minutes=13 * i)).timestamp(), time.time() - 120)
            model = ("llama3.2:3b", "qwen2.5:7b", "Qwen/Qwen2.5-7B")[i % 3]
            records.append(RequestRecord(ts_start=ts, server=SERVERS[i % 3 == 2], endpoint="/api/chat", model=model,
                                         status=200, latency_s=2.0, ttft_s=0.1 + day / 100,
                                         server_tokens_per_s=90.0 - (10 if day < 3 else 0),
                                         prompt_tokens=20 + i, completion_tokens=100 * (i + 1)))
        events.append(Event("server_version", SERVERS[0], "", start.timestamp(),
                            labels_of(server=SERVERS[0], version="0.13.0" if day < 3 else "0.12.6")))
    runtime.store.put(records)
    runtime.store.put(events)
    runtime.store.flush()


def test_the_table_shows_the_reports_figures_sorted_and_per_server(qtbot, runtime: Runtime, tmp_path: Path) -> None:
    fill(runtime)
    panel = UsagePanel(runtime)
    qtbot.addWidget(panel)
    panel.resize(1400, 900)
    panel.show()
    panel.requery()
    qtbot.waitUntil(lambda: panel.report is not None and not panel._busy, timeout=20_000)
    report = usage_report(runtime.store.reader(), *panel.current_range(time.time()), "day")
    assert panel.sorter.rowCount() == len(report.rows) == 3
    completion = [h for h, *_ in COLUMNS].index("Completion tokens")
    shown = [panel.sorter.index(r, completion).data(Qt.ItemDataRole.UserRole) for r in range(3)]
    assert shown == sorted((c.completion_tokens for c in report.rows), reverse=True)  # biggest first
    assert f"<b>{report.total.requests:,.0f}</b> requests" in panel.totals.text()
    assert len(panel.bars) == 3 and "llama3.2:3b" in panel.legend.text()

    panel.per_box.setCurrentIndex(1)  # per server
    qtbot.waitUntil(lambda: panel.report is not None and panel.sorter.rowCount() == 2 and not panel._busy,
                    timeout=20_000)
    assert panel.sorter.headerData(1, Qt.Orientation.Horizontal) == "Requests"  # no model column

    out = tmp_path / "usage.csv"
    panel.save_csv(out)
    with open(out, encoding="utf-8-sig", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(panel.report.cells)
    assert "written to usage.csv" in panel.status.text()


def test_trends_mark_the_version_change(qtbot, runtime: Runtime) -> None:
    fill(runtime)
    panel = UsagePanel(runtime)
    qtbot.addWidget(panel)
    panel.show()
    panel.pages.setCurrentIndex(1)
    trends = panel.trends
    qtbot.waitUntil(lambda: trends.trend is not None and not trends._busy, timeout=20_000)
    assert trends.picker.count() == 3
    trends.picker.setCurrentText("llama3.2:3b")
    qtbot.waitUntil(lambda: trends.trend is not None and trends.trend.model == "llama3.2:3b" and not trends._busy,
                    timeout=20_000)
    (change,) = trends.trend.changes
    assert change.text == f"{SERVERS[0]}: version 0.12.6 → 0.13.0"
    assert "0.12.6 → 0.13.0" in trends.changes.text()
    speeds = [d.speed_median for d in trends.trend.days if d.speed_median is not None]
    assert speeds[0] == 90.0 and speeds[-1] == 80.0  # slower since the update


@pytest.fixture
def upstream():
    with SimUpstream() as up:
        yield up


def test_a_benchmark_runs_shows_its_spread_and_two_runs_compare(qtbot, runtime: Runtime,
                                                                upstream: SimUpstream) -> None:
    target = PromptTarget("ollama@sim", upstream.url, "ollama", "llama3.2")
    dialog = BenchmarkDialog(runtime, [target])
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.targets.item(0).checkState() == Qt.CheckState.Checked  # the only model: ticked
    dialog.prompts.setPlainText("Why is the sky blue?\n---\nWrite a haiku.")
    dialog.repeat.setValue(3)
    for name in ("before", "after"):
        dialog.name.setText(name)
        dialog.run_button.click()
        qtbot.waitUntil(lambda: dialog.run_button.isEnabled(), timeout=30_000)
        assert dialog.progress.value() == 6 and "done, 6 of 6 requests" in dialog.message.text()
        assert dialog.results.rowCount() == 1 and dialog.results.item(0, 1).text() == "6"
        assert "(" in dialog.results.item(0, 3).text()  # median (p10–p90)
    dialog.pages.setCurrentIndex(1)
    assert dialog.run_a.count() == 2 and dialog.run_a.currentText().startswith("#1 before")
    assert dialog.run_b.currentText().startswith("#2 after")
    assert dialog.comparison.rowCount() == 1 and dialog.comparison.item(0, 0).text() == "llama3.2"
    assert dialog.comparison.item(0, 6).text() in ("better", "worse", "noise")
