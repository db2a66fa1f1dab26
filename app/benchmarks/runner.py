"""Running a benchmark: every prompt of a set, ``repeat`` times, against one or several models,
one request after another or several at once, each measured by :class:`~app.prompt_runner.PromptRun`
(the proxy's meter), each stored as it finishes.

The jobs interleave the targets within each repeat (repeat 1 of every model, then repeat 2...)
so a machine that warms up or slows down during the run affects every model alike. Every
request is also published through the hub as a request record (``source="benchmark"``), so the
usage view and the per-model charts count it. When the run ends, the energy of each repeat is
computed from the GPU or CPU energy readings recorded meanwhile (:mod:`app.usage.energy`).

    run = BenchmarkRun(config, runtime.hub.publish, runtime.store)
    run.start(); run.join(); print(summarize(run.results))
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from app.benchmarks.records import BenchmarkConfig, BenchResult, add_result, create_benchmark, finish_benchmark
from app.prompt_runner import PromptRequest, PromptRun
from app.records import Record, RequestRecord
from app.usage.energy import load_curve, split_equally

if TYPE_CHECKING:
    from app.storage.store import Store

log = logging.getLogger(__name__)

ENERGY_WAIT_S = 3.0   # after the last request, how long to wait for an energy reading past its end


class BenchmarkRun:
    """One benchmark on a coordinating thread; :meth:`cancel` from any thread.

    Args:
        config: what to run.
        publish: where the request records go (``Hub.publish``), or None.
        store: where the run is saved (its writer thread), or None to keep it in memory.
        on_result: called with each finished repeat (from the coordinating thread).
        on_finished: called once at the end with the run (from the coordinating thread).
        timeout_s: per request.
    """

    def __init__(self, config: BenchmarkConfig, publish: Callable[[list[Record]], None] | None = None,
                 store: Store | None = None, on_result: Callable[[BenchResult], None] | None = None,
                 on_finished: Callable[[BenchmarkRun], None] | None = None, timeout_s: float = 300.0) -> None:
        if config.repeat < 1 or config.concurrency < 1:
            raise ValueError("repeat and concurrency must be at least 1")
        if not config.targets or not config.prompts:
            raise ValueError("a benchmark needs at least one model and one prompt")
        self.config = config
        self.publish = publish
        self.store = store
        self.on_result = on_result
        self.on_finished = on_finished
        self.timeout_s = timeout_s
        self.jobs = [(rep, p, t) for rep in range(config.repeat) for p in range(len(config.prompts))
                     for t in range(len(config.targets))]
        self.results: list[BenchResult] = []
        self.benchmark_id: int | None = None
        self.status = "ready"
        self.error = ""
        self._cancel = threading.Event()
        self._active: dict[int, PromptRun] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="llmmon-benchmark", daemon=True)

    @property
    def total(self) -> int:
        return len(self.jobs)

    def start(self) -> None:
        self.status = "running"
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            active = list(self._active.values())
        for run in active:
            run.cancel()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        started = time.time()
        try:
            if self.store is not None:
                session = self.store.session_id
                self.benchmark_id = self.store.call(
                    lambda db: create_benchmark(db, self.config, started, session)).result(30)
            self._run_jobs()
            self.status = "cancelled" if self._cancel.is_set() else "done"
            energy = self._energy()
            if self.store is not None and self.benchmark_id is not None:
                bid, status = self.benchmark_id, self.status
                self.store.call(lambda db: finish_benchmark(db, bid, time.time(), status, energy)).result(30)
        except Exception as exc:  # the GUI shows it; the app goes on
            log.exception("benchmark %s failed", self.config.name)
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        if self.on_finished is not None:
            self.on_finished(self)

    def _run_jobs(self) -> None:
        finished: queue.SimpleQueue[tuple[int, RequestRecord]] = queue.SimpleQueue()
        next_job = 0
        while True:
            while (not self._cancel.is_set() and next_job < len(self.jobs)
                   and len(self._active) < self.config.concurrency):
                self._launch(next_job, finished)
                next_job += 1
            with self._lock:
                if not self._active:
                    return
            index, record = finished.get()
            with self._lock:
                self._active.pop(index).join(5.0)
            if self._cancel.is_set() and record.error_type == "cancelled":
                continue  # not a measurement
            self._keep(index, record)

    def _launch(self, index: int, finished: queue.SimpleQueue[tuple[int, RequestRecord]]) -> None:
        repeat, prompt_index, target_index = self.jobs[index]
        prompt = self.config.prompts[prompt_index]
        c = self.config
        run = PromptRun(c.targets[target_index],
                        PromptRequest(prompt.prompt, prompt.system, c.temperature, c.max_tokens, c.seed),
                        self.publish, on_done=lambda rec: finished.put((index, rec)), timeout_s=self.timeout_s)
        run.record.source = "benchmark"
        run.record.client = f"llmmon benchmark {c.name}"[:200]
        with self._lock:
            self._active[index] = run
        run.start()

    def _keep(self, index: int, rec: RequestRecord) -> None:
        repeat, prompt_index, _target = self.jobs[index]
        speed = rec.server_tokens_per_s if rec.server_tokens_per_s is not None else rec.client_tokens_per_s
        result = BenchResult(rec.ts_start, rec.server, rec.model, prompt_index, repeat, rec.ttft_s, speed,
                             rec.prompt_tokens, rec.completion_tokens, rec.tokens_estimated, rec.latency_s,
                             rec.error_type, rec.error[:500])
        self.results.append(result)
        if self.store is not None and self.benchmark_id is not None:
            bid = self.benchmark_id
            self.store.call(lambda db: add_result(db, bid, result))
        if self.on_result is not None:
            self.on_result(result)

    def _energy(self) -> list[BenchResult]:
        """Each repeat's joules from the energy readings recorded during the run (waiting a
        little for the first reading after the last request), or nothing without readings."""
        if self.store is None or not self.results:
            return []
        starts = np.array([r.ts_start for r in self.results])
        ends = np.array([r.end for r in self.results])
        self.store.flush()
        conn = self.store.reader()
        try:
            deadline = time.monotonic() + ENERGY_WAIT_S
            tick = threading.Event()
            while True:
                curve = load_curve(conn, float(starts.min()), float(ends.max()))
                if curve is None or curve.covers(starts, ends).all() or time.monotonic() >= deadline:
                    break
                tick.wait(0.25)  # the next collector reading, past the last request's end
                self.store.flush()
        finally:
            conn.close()
        if curve is None:
            return []
        joules, shared = split_equally(starts, ends, curve.energy)
        covered = curve.covers(starts, ends)
        self.results = [replace(r, energy_j=float(j), energy_source=curve.source, energy_shared=bool(s))
                        if ok else r for r, j, s, ok in zip(self.results, joules, shared, covered, strict=True)]
        return [r for r, ok in zip(self.results, covered, strict=True) if ok]
