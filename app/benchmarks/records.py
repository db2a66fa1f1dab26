"""Named benchmark runs in the database (tables ``benchmarks`` and ``benchmark_results``).

A benchmark keeps its own copy of each repeat's figures, so it outlives the retention of the
requests table: a run from before a driver update can be compared with one after it months
later. Writes run on the store's writer thread (``Store.call``); reads take any connection.
The configuration is kept as JSON without API keys.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, astuple, dataclass, fields
from typing import Any

import sqlite_utils

from app.benchmarks.prompts import BenchPrompt
from app.prompt_runner import PromptTarget


@dataclass(frozen=True, slots=True)
class BenchmarkConfig:
    """What a benchmark runs: every prompt ``repeat`` times against every target, at most
    ``concurrency`` requests at once (1: one after another)."""

    name: str
    targets: tuple[PromptTarget, ...]
    prompts: tuple[BenchPrompt, ...]
    repeat: int = 5
    concurrency: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def to_json(self) -> str:
        data = asdict(self)
        for target in data["targets"]:
            target.pop("api_key", None)  # secrets live in the keyring only
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> BenchmarkConfig:
        data: dict[str, Any] = json.loads(text)
        data["targets"] = tuple(PromptTarget(**t) for t in data.get("targets", []))
        data["prompts"] = tuple(BenchPrompt(**p) for p in data.get("prompts", []))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One repeat of one prompt against one target, as measured."""

    ts_start: float
    server: str
    model: str
    prompt_index: int
    repeat: int
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    latency_s: float | None = None
    error_type: str = ""
    error: str = ""
    energy_j: float | None = None
    energy_source: str = ""
    energy_shared: bool = False   # other requests ran at the same time: an estimate

    @property
    def ok(self) -> bool:
        return not self.error_type

    @property
    def end(self) -> float:
        return self.ts_start + (self.latency_s or 0.0)


RESULT_COLUMNS = tuple(f.name for f in fields(BenchResult))


@dataclass(frozen=True, slots=True)
class BenchmarkInfo:
    id: int
    name: str
    started: float
    ended: float | None
    status: str            # "running", "done", "cancelled", "interrupted"
    config: BenchmarkConfig
    note: str = ""

    @property
    def label(self) -> str:
        from datetime import datetime

        return f"#{self.id} {self.name} ({datetime.fromtimestamp(self.started):%Y-%m-%d %H:%M})"


# ----------------------------------------------------------------------------- writing
def create_benchmark(db: sqlite_utils.Database, config: BenchmarkConfig, started: float,
                     session_id: int | None) -> int:
    pk = db.table("benchmarks").insert({"name": config.name, "started": started, "ended": None,
                                        "session_id": session_id, "status": "running",
                                        "config": config.to_json(), "note": ""}).last_pk
    assert pk is not None, "insert() sets last_pk"
    return int(pk)


def add_result(db: sqlite_utils.Database, benchmark_id: int, result: BenchResult) -> None:
    db.execute(f"INSERT INTO benchmark_results (benchmark_id, {', '.join(RESULT_COLUMNS)}) "
               f"VALUES (?, {', '.join('?' * len(RESULT_COLUMNS))})", [benchmark_id, *astuple(result)])
    db.conn.commit()


def finish_benchmark(db: sqlite_utils.Database, benchmark_id: int, ended: float, status: str,
                     energy: list[BenchResult] | None = None) -> None:
    """Close a run; ``energy``: results whose energy is now known (matched by start and model)."""
    with db.atomic():
        db.execute("UPDATE benchmarks SET ended=?, status=? WHERE id=?", [ended, status, benchmark_id])
        for r in energy or []:
            db.execute("UPDATE benchmark_results SET energy_j=?, energy_source=?, energy_shared=? "
                       "WHERE benchmark_id=? AND ts_start=? AND model=?",
                       [r.energy_j, r.energy_source, int(r.energy_shared), benchmark_id, r.ts_start, r.model])


# ----------------------------------------------------------------------------- reading
def _info(row: tuple[Any, ...]) -> BenchmarkInfo:
    return BenchmarkInfo(int(row[0]), row[1], float(row[2]), row[3], row[4],
                         BenchmarkConfig.from_json(row[5]), row[6] or "")


_INFO = "SELECT id, name, started, ended, status, config, note FROM benchmarks"


def list_benchmarks(conn: sqlite3.Connection) -> list[BenchmarkInfo]:
    """Every stored benchmark, newest first (none in a database from before benchmarks)."""
    try:
        return [_info(r) for r in conn.execute(_INFO + " ORDER BY started DESC, id DESC")]
    except sqlite3.OperationalError:
        return []


def find_benchmark(conn: sqlite3.Connection, ref: str) -> BenchmarkInfo:
    """A benchmark by id (``12``, ``#12``) or by name (the newest of that name); LookupError."""
    text = ref.strip().lstrip("#")
    try:
        if text.isdigit():
            row = conn.execute(_INFO + " WHERE id=?", (int(text),)).fetchone()
        else:
            row = conn.execute(_INFO + " WHERE name=? ORDER BY started DESC LIMIT 1", (ref.strip(),)).fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is None:
        raise LookupError(f"no benchmark {ref!r}")
    return _info(row)


def benchmark_results(conn: sqlite3.Connection, benchmark_id: int) -> list[BenchResult]:
    rows = conn.execute(f"SELECT {', '.join(RESULT_COLUMNS)} FROM benchmark_results WHERE benchmark_id=? "
                        "ORDER BY ts_start, id", (benchmark_id,)).fetchall()
    out = []
    for row in rows:
        values = dict(zip(RESULT_COLUMNS, row, strict=True))
        values["tokens_estimated"] = bool(values["tokens_estimated"])
        values["energy_shared"] = bool(values["energy_shared"])
        out.append(BenchResult(**values))
    return out
