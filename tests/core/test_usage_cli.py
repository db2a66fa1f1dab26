"""``main.py usage`` and ``main.py bench`` as a user runs them: the printed table and the CSV
hold the same figures as the report, text cells are inert in a spreadsheet, and mistakes
(a bad --since, a broken prompt file, no database) end with a clear message and exit status."""
from __future__ import annotations

import csv
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import main
from app.benchmarks.prompts import BenchPrompt
from app.benchmarks.records import BenchmarkConfig
from app.benchmarks.runner import BenchmarkRun
from app.hub import Hub
from app.prompt_runner import PromptTarget
from app.records import RequestRecord
from app.storage.store import Store
from app.usage.report import usage_report
from tests.sim.upstream import SimUpstream
from tests.support.session_data import DANGEROUS_FIRST, MODELS, unescape

SERVER = "ollama@127.0.0.1:11434"


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """Three days of requests, hostile model names among them."""
    path = tmp_path / "usage.db"
    store = Store(path)
    store.start()
    today = datetime.combine(datetime.now().date(), datetime.min.time())
    records = []
    for day in range(3):
        for i, model in enumerate(["llama3.2:3b", *MODELS]):
            ts = (today - timedelta(days=day) + timedelta(hours=9, minutes=7 * i)).timestamp()
            records.append(RequestRecord(ts_start=min(ts, time.time() - 60), server=SERVER, endpoint="/api/chat",
                                         model=model, status=200 if i % 3 else 500,
                                         error_type="" if i % 3 else "http", latency_s=1.5,
                                         prompt_tokens=10 + i, completion_tokens=100 * (day + 1) + i))
    store.put(records)
    store.close()
    return path


def test_usage_prints_the_table_and_writes_the_same_csv(recorded: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "usage.csv"
    assert main.main(["--db", str(recorded), "usage", "--since", "7d", "--by", "day", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    report = usage_report(Store(recorded).reader(), datetime.now().timestamp() - 7 * 86400, time.time(), "day")
    assert f"{report.total.completion_tokens:,.0f}" in printed and "TOTAL" in printed
    assert "llama3.2:3b" in printed and "tokens from" in printed
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.cells) > 3
    by_key = {(c.start, c.model): c for c in report.cells}
    for row in rows:
        start = datetime.fromisoformat(row["period_start"]).timestamp()
        cell = by_key[(start, unescape(row["model"]))]
        assert float(row["completion_tokens"]) == cell.completion_tokens
        assert (int(row["errors"]), row["completion_tokens_from"]) == (cell.errors, "requests")
        assert not row["model"].startswith(DANGEROUS_FIRST)  # a formula stays text in a spreadsheet
    assert {unescape(r["model"]) for r in rows} == {"llama3.2:3b", *MODELS}


def test_usage_per_server_adds_the_models_up(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--db", str(recorded), "usage", "--since", "all", "--per", "server"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if SERVER in line]
    assert len(lines) == 1  # one line for the server, whatever its models


def test_usage_mistakes_say_what_is_wrong(tmp_path: Path, recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main.main(["--db", str(recorded), "usage", "--since", "last tuesday"])
    assert stopped.value.code == 2 and "is not a range (use 7d" in capsys.readouterr().err
    assert main.main(["--db", str(tmp_path / "none.db"), "usage"]) == 2
    assert "no database at" in capsys.readouterr().err


def test_bench_lists_and_compares_stored_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.db"
    store = Store(path)
    store.start()
    with SimUpstream() as upstream:
        for name in ("before", "after"):
            config = BenchmarkConfig(name, (PromptTarget("ollama@sim", upstream.url, "ollama", "llama3.2"),),
                                     (BenchPrompt("Why is the sky blue?"),), repeat=3)
            bench = BenchmarkRun(config, Hub(store).publish, store)
            bench.start()
            bench.join(30)
    store.close()
    assert main.main(["--db", str(path), "bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "#2 after" in listed and "#1 before" in listed and "1 prompt(s) × 3" in listed
    assert main.main(["--db", str(path), "bench", "--compare", "before", "#2"]) == 0
    compared = capsys.readouterr().out
    assert "A = #1 before" in compared and "llama3.2" in compared and "change (95 % interval)" in compared
    assert main.main(["--db", str(path), "bench", "--compare", "before", "nope"]) == 2
    assert "no benchmark 'nope'" in capsys.readouterr().err


def test_bench_with_a_broken_prompt_file_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "set.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": \n', encoding="utf-8")
    code = main.main(["--db", str(tmp_path / "b.db"), "bench", "--models", "m", "--prompt-file", str(prompts),
                      "--server", "http://127.0.0.1:9"])
    assert code == 2 and f"{prompts} line 2: not JSON" in capsys.readouterr().err
