"""The log file after real polling: state changes in it, the HTTP libraries' per-request lines
not (they were 97 % of a user's file after six minutes)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.logs import QUIET_LOGGERS, setup_logging
from app.records import Health, HealthState, Record
from app.scheduler import Scheduler
from collectors.vllm import VllmCollector
from tests.sim.vllm import SimVllm
from tests.support import wait_until


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """setup_logging into a temporary directory; the root logger is put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in QUIET_LOGGERS})
    for attr in ("_llmmon_configured", "_llmmon_log_file"):
        root.__dict__.pop(attr, None)
    path = setup_logging(tmp_path)
    assert path is not None
    yield path
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    for attr in ("_llmmon_configured", "_llmmon_log_file"):
        root.__dict__.pop(attr, None)


def test_polling_logs_state_changes_not_every_http_request(log_file: Path) -> None:
    seen: list[Record] = []
    with SimVllm() as sim:
        scheduler = Scheduler(seen.extend)
        scheduler.add(VllmCollector(sim.url, name="vllm@sim", interval=0.05))
        scheduler.start()
        try:
            def states() -> list[HealthState]:
                return [r.state for r in list(seen) if isinstance(r, Health)]
            wait_until(lambda: len(sim.requests) >= 20, what="twenty HTTP requests to the server")
            sim.go_down()
            wait_until(lambda: HealthState.DOWN in states(), what="the server seen down")
            sim.come_back()
            wait_until(lambda: states()[-1] == HealthState.UP, what="the server seen up again")
        finally:
            scheduler.stop()
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text(encoding="utf-8")
    assert "HTTP Request" not in text and "httpx" not in text
    assert "vllm@sim is down" in text and "vllm@sim is up" in text
    logging.getLogger("httpx").warning("a warning from httpx still reaches the file")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "a warning from httpx still reaches the file" in log_file.read_text(encoding="utf-8")
