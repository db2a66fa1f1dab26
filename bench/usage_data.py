"""A month of plausible llmmon history written straight into a database file, for the usage
benchmark (1M requests, 10M samples) and for looking at the Usage tab with a full database.

Three servers (Ollama with two models, llama.cpp, vLLM), one session per day, requests with a
working-day rhythm, the llama.cpp and vLLM counters the collectors would have stored (with
30 % more traffic than went through the proxy), GPU power following the load, the version and
digest events the collectors record (a GPU driver update on day 12, an Ollama update with a new
``llama3.2:3b`` digest on day 20, after which that model decodes 15 % slower), and two stored
benchmarks either side of the driver update. The schema comes from the Store (migrations), the
rows from ``executemany``: filling 10M samples through the Store's writer would take minutes.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.benchmarks.prompts import BenchPrompt
from app.benchmarks.records import RESULT_COLUMNS, BenchmarkConfig
from app.prompt_runner import PromptTarget
from app.records import labels_json
from app.storage.store import Store
from app.usage.periods import local_midnight

OLLAMA, LLAMACPP, VLLM = "ollama@127.0.0.1:11434", "llamacpp@127.0.0.1:8080", "vllm@127.0.0.1:8000"
# (server, model, share of requests, decode tokens/s, prompt tokens/s)
MODELS = [(OLLAMA, "llama3.2:3b", 0.40, 95.0, 1800.0), (OLLAMA, "qwen2.5:7b", 0.20, 48.0, 900.0),
          (LLAMACPP, "gemma-3-4b-it", 0.25, 70.0, 1400.0), (VLLM, "Qwen/Qwen2.5-7B-Instruct", 0.15, 55.0, 4000.0)]
UNPROXIED = 0.3          # the servers' counters also saw this much traffic that bypassed the proxy
SLOWER_AFTER_DAY = 20    # llama3.2:3b's new digest decodes 15 % slower
DRIVER_DAY = 12


@dataclass(frozen=True)
class Filled:
    path: Path
    t0: float
    t1: float
    requests: int
    samples: int


def _series_id(conn: sqlite3.Connection, name: str, **labels: str) -> int:
    text = labels_json(tuple(sorted(labels.items())))
    conn.execute("INSERT OR IGNORE INTO series (name, labels) VALUES (?, ?)", (name, text))
    return int(conn.execute("SELECT id FROM series WHERE name=? AND labels=?", (name, text)).fetchone()[0])


def populate(path: Path, *, days: int = 30, requests: int = 1_000_000, sample_interval: float = 2.0,
             now: float, seed: int = 0) -> Filled:
    """Write the history ending ``now`` into a new database at ``path``."""
    Store(path).close()  # the schema, by the migrations
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    day_starts = [local_midnight(now, d) for d in range(days - 1, -1, -1)]
    t0, t1 = day_starts[0], now
    with conn:
        conn.executemany("INSERT INTO sessions (id, name, started, ended, host, note) VALUES (?,?,?,?,?,?)",
                         [(i + 1, f"Day {i + 1}", s, min(s + 86400.0, now), "bench", "")
                          for i, s in enumerate(day_starts)])
    # --- requests: a working-day rhythm (busy 9-18 h local), Poisson-ish arrival times
    hours = (rng.random(requests) ** 0.7) * 10 + 8.5 + rng.normal(0, 1.2, requests)
    day = rng.integers(0, days, requests)
    starts = np.array(day_starts)[day] + np.clip(hours, 0, 23.99) * 3600.0
    keep = starts < now - 60
    starts, day = np.sort(starts[keep]), np.sort(day[keep])
    n = len(starts)
    pick = rng.choice(len(MODELS), size=n, p=[m[2] for m in MODELS])
    speeds = np.array([m[3] for m in MODELS])[pick] * rng.lognormal(0, 0.08, n)
    slower = (pick == 0) & (day >= SLOWER_AFTER_DAY)
    speeds[slower] *= 0.85
    prompt_tokens = rng.lognormal(5.5, 0.8, n).astype(int) + 5
    completion = rng.lognormal(5.2, 0.7, n).astype(int) + 1
    ttft = 0.05 + prompt_tokens / np.array([m[4] for m in MODELS])[pick] + rng.exponential(0.05, n)
    latency = ttft + completion / speeds
    errors = rng.random(n) < 0.01
    load = np.where(rng.random(n) < 0.01, rng.uniform(1.5, 4.0, n), rng.uniform(0.002, 0.02, n))
    session = day + 1
    sources = np.where(rng.random(n) < 0.03, "prompt_test", "proxy")
    rows = [(int(session[i]), float(starts[i]), MODELS[pick[i]][0], "/api/chat", "POST", MODELS[pick[i]][1],
             "python-httpx", 500 if errors[i] else 200, 1, float(ttft[i]), float(latency[i]),
             int(prompt_tokens[i]), None if errors[i] else int(completion[i]), 0,
             None if errors[i] else float(speeds[i]), float(load[i]) if pick[i] < 2 else None,
             "http" if errors[i] else "", str(sources[i])) for i in range(n)]
    with conn:
        conn.executemany(
            "INSERT INTO requests (session_id, ts_start, server, endpoint, method, model, client, status, stream, "
            "ttft_s, latency_s, prompt_tokens, completion_tokens, tokens_estimated, server_tokens_per_s, load_s, "
            "error_type, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    del rows
    # --- samples: what the collectors would have recorded, one reading per sample_interval
    ts = np.arange(t0 + 1.0, now, sample_interval)
    sess = np.searchsorted(np.array(day_starts), ts, side="right")
    ends = starts + latency
    ok = ~errors

    def counter(server: str, tokens: np.ndarray) -> np.ndarray:
        mine = (np.array([MODELS[p][0] for p in range(len(MODELS))])[pick] == server) & ok
        order = np.argsort(ends[mine])
        cumulative = np.concatenate([[0.0], np.cumsum(tokens[mine][order])])
        return cumulative[np.searchsorted(ends[mine][order], ts, side="right")] * (1 + UNPROXIED)

    def in_flight(server: str) -> np.ndarray:
        mine = np.array([MODELS[p][0] for p in range(len(MODELS))])[pick] == server
        return (np.searchsorted(np.sort(starts[mine]), ts, side="right")
                - np.searchsorted(np.sort(ends[mine]), ts, side="right")).astype(float)

    def rate(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.diff(values) / sample_interval])

    vllm_model = MODELS[3][1]
    busy_all = in_flight(OLLAMA) + in_flight(LLAMACPP) + in_flight(VLLM)
    series = [
        (_series_id(conn, "llamacpp_generation_tokens_total", server=LLAMACPP), counter(LLAMACPP, completion * 1.0)),
        (_series_id(conn, "llamacpp_prompt_tokens_total", server=LLAMACPP), counter(LLAMACPP, prompt_tokens * 1.0)),
        (_series_id(conn, "llamacpp_requests_processing", server=LLAMACPP), in_flight(LLAMACPP)),
        (_series_id(conn, "llm_model_loaded", server=LLAMACPP, model=MODELS[2][1]), np.ones(len(ts))),
        (_series_id(conn, "vllm_generation_tokens_per_second", server=VLLM, model=vllm_model),
         rate(counter(VLLM, completion * 1.0))),
        (_series_id(conn, "vllm_prompt_tokens_per_second", server=VLLM, model=vllm_model),
         rate(counter(VLLM, prompt_tokens * 1.0))),
        (_series_id(conn, "vllm_requests_running", server=VLLM, model=vllm_model), in_flight(VLLM)),
        (_series_id(conn, "llm_poll_latency_seconds", server=VLLM), 0.004 + rng.exponential(0.002, len(ts))),
        (_series_id(conn, "gpu_power_watts", gpu="0"), 30.0 + np.minimum(busy_all, 4) * 60.0
         + rng.normal(0, 3, len(ts))),
    ]
    total_samples = 0
    for sid, values in series:
        for lo in range(0, len(ts), 500_000):
            hi = lo + 500_000
            with conn:
                conn.executemany("INSERT INTO samples (session_id, series_id, ts, value) VALUES (?,?,?,?)",
                                 zip(sess[lo:hi].tolist(), [sid] * len(ts[lo:hi]), ts[lo:hi].tolist(),
                                     values[lo:hi].tolist(), strict=True))
        total_samples += len(ts)
    _events(conn, day_starts, now)
    _benchmarks(conn, day_starts, rng)
    conn.close()
    return Filled(path, t0, t1, n, total_samples)


def _events(conn: sqlite3.Connection, day_starts: list[float], now: float) -> None:
    rows = []
    for i, start in enumerate(day_starts):
        at = start + 8 * 3600.0 + 60.0
        if at > now:
            break
        rows.append((i + 1, at, "gpu_driver", "gpu", "", {"version": "560.35.03" if i >= DRIVER_DAY else "550.54.15"}))
        rows.append((i + 1, at, "server_version", OLLAMA, "",
                     {"server": OLLAMA, "version": "0.13.0" if i >= SLOWER_AFTER_DAY else "0.12.6"}))
        for server, model, *_ in MODELS[:2]:
            digest = "fe938a131f40e6f6" if model == "llama3.2:3b" and i >= SLOWER_AFTER_DAY else f"{abs(hash(model)):x}"
            rows.append((i + 1, at, "model_digest", server, "", {"server": server, "model": model, "digest": digest}))
        for hour in (9, 13, 16):
            for server, model, *_ in MODELS:
                rows.append((i + 1, start + hour * 3600.0, "model_loaded", server, "",
                             {"server": server, "model": model}))
    with conn:
        conn.executemany("INSERT INTO events (session_id, ts, kind, source, message, labels) VALUES (?,?,?,?,?,?)",
                         [(s, ts, k, src, m or f"{k} {json.dumps(lab)}", labels_json(tuple(sorted(lab.items()))))
                          for s, ts, k, src, m, lab in rows])


def _benchmarks(conn: sqlite3.Connection, day_starts: list[float], rng: np.random.Generator) -> None:
    """Two runs of the same prompts either side of the driver update."""
    targets = tuple(PromptTarget(OLLAMA, "http://127.0.0.1:11434", "ollama", m[1]) for m in MODELS[:2])
    prompts = (BenchPrompt("Explain the difference between TCP and UDP."), BenchPrompt("Write a haiku about GPUs."))
    for bid, (name, day, slow) in enumerate((("before driver 560", DRIVER_DAY - 1, 1.0),
                                             ("after driver 560", DRIVER_DAY, 0.92)), start=1):
        if day >= len(day_starts):
            continue
        started = day_starts[day] + 19 * 3600.0
        config = BenchmarkConfig(name, targets, prompts, repeat=10, concurrency=1, max_tokens=256, seed=42)
        conn.execute("INSERT INTO benchmarks (id, name, started, ended, session_id, status, config, note) "
                     "VALUES (?,?,?,?,?,?,?,?)", (bid, name, started, started + 600, day + 1, "done",
                                                  config.to_json(), ""))
        at = started
        for repeat in range(10):
            for p in range(2):
                for server, model, _share, speed, _prefill in MODELS[:2]:
                    measured = speed * (slow if model == "llama3.2:3b" else 1.0) * rng.normal(1.0, 0.025)
                    ttft = 0.08 * rng.normal(1.0, 0.05) / (slow if model == "llama3.2:3b" else 1.0)
                    latency = ttft + 256 / measured
                    values = dict(ts_start=at, server=server, model=model, prompt_index=p, repeat=repeat,
                                  ttft_s=ttft, tokens_per_s=measured, prompt_tokens=20, completion_tokens=256,
                                  tokens_estimated=0, latency_s=latency, error_type="", error="",
                                  energy_j=latency * 280.0, energy_source="gpu_power", energy_shared=0)
                    conn.execute(f"INSERT INTO benchmark_results (benchmark_id, {', '.join(RESULT_COLUMNS)}) "
                                 f"VALUES (?, {', '.join('?' * len(RESULT_COLUMNS))})",
                                 [bid, *(values[c] for c in RESULT_COLUMNS)])
                    at += latency + 0.5
    conn.commit()
