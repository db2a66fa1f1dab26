"""A request that never reached a server (the proxy's 502 for a server that is not there) is
recorded as a request row with its error, and starts no series: none in the live charts, none
in SQLite, no column in the CSV export. The issue: one such request left a made-up
``ollama@127.0.0.1:11434 gemma.gguf`` series in every chart and CSV."""
from __future__ import annotations

import csv
import socket
from pathlib import Path

import httpx

from app.config import Settings
from app.export import CsvExport, ExportRequest
from app.proxy import ProxyServer
from app.runtime import Runtime, publish_with_known_names
from tests.sim.upstream import SimUpstream
from tests.support import query, wait_until


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again: a connection there is refused


def test_no_series_from_a_request_that_never_reached_a_server(db_file: Path, tmp_path: Path) -> None:
    absent = f"http://127.0.0.1:{closed_port()}"
    runtime = Runtime.create(db_file, Settings(discover_local=False, system_interval_s=60))
    runtime.start()
    publish = publish_with_known_names(runtime.hub)
    nowhere = ProxyServer(absent, kind="ollama", publish=publish)
    try:
        with SimUpstream() as up:
            there = ProxyServer(up.url, kind="vllm", publish=publish)
            for proxy in (nowhere, there):
                proxy.start()
            try:
                with httpx.Client(timeout=10) as client:
                    lost = client.post(f"{nowhere.url}/api/chat", json={"model": "gemma.gguf", "messages": []})
                    assert lost.status_code == 502
                    ok = client.post(f"{there.url}/v1/chat/completions", json={"model": "tiny-llama", "messages": []})
                    assert ok.status_code == 200
                # The statistics have seen both requests once the answered one has its series.
                wait_until(lambda: runtime.hub.buffers.find("llm_tokens_per_second", server=there.name),
                           what="the answered request's series")
            finally:
                there.stop()
        live = {dict(labels).get("server") for _, labels in runtime.hub.buffers.keys()}
        assert there.name in live and nowhere.name not in live
        rows = [r for r in runtime.requests.recent()[1] if r.server == nowhere.name] if runtime.requests else []
        assert [(r.status, r.error_type, r.model) for r in rows] == [(502, "upstream_down", "gemma.gguf")]
    finally:
        nowhere.stop()
        runtime.stop()
    assert query(db_file, "SELECT count(*) FROM series WHERE labels LIKE ?", (f'%"{nowhere.name}"%',)) == [(0,)]
    assert query(db_file, "SELECT count(*) FROM series WHERE labels LIKE ?", (f'%"{there.name}"%',))[0][0] > 0
    assert query(db_file, "SELECT server, model, status, error_type FROM requests WHERE server=?", (nowhere.name,)) \
        == [(nowhere.name, "gemma.gguf", 502, "upstream_down")]
    session = query(db_file, "SELECT max(id) FROM sessions")[0][0]
    conn = runtime.store.reader()
    try:
        CsvExport(conn, ExportRequest(session_id=session, out_dir=tmp_path / "csv", resolution_s=1.0)).run()
    finally:
        conn.close()
    with open(tmp_path / "csv" / "samples_wide.csv", encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f))
    assert any(there.name in column for column in header)
    assert not any(nowhere.name in column or "gemma.gguf" in column for column in header)
    with open(tmp_path / "csv" / "requests.csv", encoding="utf-8-sig", newline="") as f:
        assert any(row.get("model") == "gemma.gguf" and row.get("error_type") == "upstream_down"
                   for row in csv.DictReader(f))
