"""Renaming a server keeps its history one series: recorded under its default name, renamed in
config.toml, recorded again after a restart — one series in SQLite, one curve in the charts
labelled with the new name, one column in the CSV export of either run. The issue: after
``name = "gemma-local"`` every chart showed ``llamacpp@127.0.0.1:8080`` and ``gemma-local``
as two series in two colours."""
from __future__ import annotations

import csv
from pathlib import Path

import openai
from PySide6.QtCore import QSettings

from app.config import config_path
from app.export import CsvExport, ExportRequest
from app.runtime import Runtime
from tests.sim.upstream import SimUpstream
from tests.support import query, wait_until
from widgets.main_window import MainWindow
from widgets.requests_panel import SERVER_COLUMN, RequestsPanel
from widgets.servers_panel import ServersPanel

CONFIG = """[general]
discover_local = false
system_interval_s = 60

[proxy]
enabled = true

[[servers]]
url = "{url}"
kind = "openai"
"""


def series_of(db_file: Path, metric: str) -> list[tuple[int, str]]:
    return query(db_file, "SELECT id, labels FROM series WHERE name=?", (metric,))


def record_one_request(runtime: Runtime, db_file: Path, requests_before: int) -> None:
    """A request through the server's proxy route, and its series written to the file."""
    (route,) = [s for s in runtime.proxies.status() if s.running] if runtime.proxies else []
    client = openai.OpenAI(base_url=f"{route.listen}/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="tiny-llama", messages=[])
    session = runtime.store.session_id
    wait_until(lambda: query(db_file, "SELECT count(*) FROM requests")[0][0] == requests_before + 1,
               what="the request row")
    wait_until(lambda: query(db_file, "SELECT count(*) FROM samples p JOIN series s ON s.id = p.series_id "
                                      "WHERE s.name = 'llm_tokens_per_second' AND p.session_id = ?",
                             (session,))[0][0] > 0, what="tokens/s samples of this run")
    wait_until(lambda: query(db_file, "SELECT count(*) FROM samples p JOIN series s ON s.id = p.series_id "
                                      "WHERE s.name = 'llm_models_loaded' AND p.session_id = ?",
                             (session,))[0][0] > 0, what="the collector's samples of this run")


def wide_columns(runtime: Runtime, session: int, out: Path) -> list[str]:
    conn = runtime.store.reader()
    try:
        CsvExport(conn, ExportRequest(session_id=session, out_dir=out, resolution_s=1.0)).run()
    finally:
        conn.close()
    with open(out / "samples_wide.csv", encoding="utf-8-sig", newline="") as f:
        return [c for c in next(csv.reader(f)) if c.startswith(("llm_tokens_per_second", "llm_models_loaded"))]


def test_a_renamed_server_keeps_one_series(qtbot, db_file: Path, tmp_path: Path) -> None:
    config = config_path()
    config.parent.mkdir(parents=True, exist_ok=True)
    with SimUpstream() as up:
        identity = f"openai@127.0.0.1:{up.port}"
        config.write_text(CONFIG.format(url=up.url), encoding="utf-8")
        before = Runtime.create(db_file)
        try:
            before.start()
            record_one_request(before, db_file, 0)
            first_session = before.store.session_id
        finally:
            before.stop()

        config.write_text(CONFIG.format(url=up.url) + 'name = "gemma-local"\n', encoding="utf-8")
        after = Runtime.create(db_file)
        try:
            after.start()
            record_one_request(after, db_file, 1)
            assert after.display_name(identity) == "gemma-local"

            window = MainWindow(after, QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
            qtbot.addWidget(window)
            window.resize(1400, 900)
            window.show()
            requests = window.panel(RequestsPanel)
            window.tabs.setCurrentWidget(requests)

            def drawn() -> bool:
                window.refresh()
                return bool(requests.tokens_plot.curve_keys())
            qtbot.waitUntil(drawn, timeout=10_000)
            # The chart reads both runs (the database fills what the live buffers miss).
            assert requests.tokens_plot.history is not None
            keys = requests.tokens_plot.curve_keys()
            assert keys == [("llm_tokens_per_second", (("model", "tiny-llama"), ("server", identity)))]
            assert requests.tokens_plot.curve(keys[0]).name() == "gemma-local tiny-llama"
            legend = requests.tokens_plot.legend   # one server: named once above its rows
            assert (legend.heading, [r.label for r in legend.rows]) == ("gemma-local", ["tiny-llama"])
            model = requests.model
            assert {model.index(r, SERVER_COLUMN).data() for r in range(model.rowCount())} == {"gemma-local"}
            assert "— gemma-local" in requests.status.text()

            servers = window.panel(ServersPanel)
            window.tabs.setCurrentWidget(servers)
            def listed() -> bool:
                window.refresh()
                return servers.tree.topLevelItemCount() == 1
            qtbot.waitUntil(listed, timeout=10_000)
            assert servers.tree.topLevelItem(0).text(0) == "● gemma-local"
            window.grab().save(str(tmp_path / "renamed.png"))
            second_session = after.store.session_id
            assert second_session is not None and first_session is not None
            columns = [wide_columns(after, s, tmp_path / f"csv{s}") for s in (first_session, second_session)]
        finally:
            after.stop()

    for metric in ("llm_tokens_per_second", "llm_models_loaded", "llm_requests_per_second"):
        ((series_id, labels),) = series_of(db_file, metric)
        assert f'"server":"{identity}"' in labels
        sessions = query(db_file, "SELECT DISTINCT session_id FROM samples WHERE series_id=? ORDER BY session_id",
                         (series_id,))
        assert sessions == [(first_session,), (second_session,)], metric
    assert query(db_file, "SELECT DISTINCT server FROM requests") == [(identity,)]
    assert columns[0] == columns[1] and len(columns[0]) == 2   # one tokens/s and one models-loaded column
    assert all(identity in c for c in columns[0])
