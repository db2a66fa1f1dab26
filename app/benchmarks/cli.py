"""Run a benchmark without a window, list the stored ones, or compare two.

    main.py bench --models llama3.2,qwen2.5:7b --prompt-file prompts.txt --repeat 5
    main.py bench --server http://127.0.0.1:8080 --models tiny --prompt "Hello" --repeat 10 --concurrency 2
    main.py bench --list
    main.py bench --compare before-driver after-driver      # names or ids (#12)

A prompt file holds prompts separated by a line ``---``, or is a ``.jsonl`` file of prompts (see
app/benchmarks/prompts.py). The server is found the way the app finds it (its kind asked unless
--kind names it); without --server, the first one up among the configured servers and the
default local ports of app/server_kinds.py. The run records like
``main.py --headless`` meanwhile (GPU power, the server's counters) into a session named after
the benchmark, and is stored under --name (default: the models and the time) for later
comparison. Ctrl-C stops it; the repeats done so far are kept.
"""
from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.benchmarks.prompts import BenchPrompt, PromptFileError, read_prompt_file
from app.benchmarks.records import BenchmarkConfig, BenchResult, benchmark_results, find_benchmark, list_benchmarks
from app.benchmarks.runner import BenchmarkRun
from app.benchmarks.stats import change_text, compare, spread_text, summarize, verdict
from app.config import ServerEntry, Settings, db_path, load_settings
from app.prompt_runner import PromptTarget
from app.records import Health, HealthState
from app.secrets import get_secret
from app.server_kinds import is_server_kind, kind_ids, where_to_start
from app.server_names import host_port
from app.storage.store import connect

if TYPE_CHECKING:
    from app.runtime import Runtime


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="A,B", help="comma-separated model names on the server")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--prompt-file", type=Path, metavar="FILE", help="the prompt set")
    what.add_argument("--prompt", metavar="TEXT", help="one prompt")
    parser.add_argument("--repeat", type=_positive, default=5, metavar="N", help="repeats of each prompt (default 5)")
    parser.add_argument("--concurrency", type=_positive, default=1, metavar="K",
                        help="requests at once (default 1: one after another)")
    parser.add_argument("--server", metavar="URL", help="the LLM server (default: the first found locally)")
    parser.add_argument("--kind", default="auto", choices=("auto", *kind_ids()),
                        help="the server's kind (default: ask it)")
    parser.add_argument("--name", default="", help="name to store the run under")
    parser.add_argument("--max-tokens", type=_positive, metavar="N", help="answer length cap")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument("--seed", type=int, metavar="S")
    parser.add_argument("--list", action="store_true", help="list the stored benchmarks")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two stored benchmarks (B against A)")
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="database file")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def summary_text(results: list[BenchResult]) -> str:
    rows = [["model", "repeats", "errors", "TTFT s median (p10–p90)", "tokens/s median (p10–p90)", "J/token"]]
    for s in summarize(results):
        rows.append([s.key, str(s.runs), str(s.errors), spread_text(s.ttft), spread_text(s.tokens_per_s),
                     f"{s.joules_per_token:.3g}" if s.joules_per_token is not None else "—"])
    return _table(rows)


def comparison_text(a: list[BenchResult], b: list[BenchResult]) -> str:
    rows = [["model", "TTFT s: A → B", "change (95 % interval)", "", "tokens/s: A → B", "change (95 % interval)", ""]]
    for c in compare(a, b):
        cells = [c.key]
        for d in (c.ttft, c.tokens_per_s):
            if d is None:
                cells += ["—", "only in one run" if c.a is None or c.b is None else "not measured", ""]
            else:
                cells += [f"{d.a.median:.3g} → {d.b.median:.3g}", change_text(d), verdict(d)]
        rows.append(cells)
    return _table(rows)


def run(args: argparse.Namespace) -> int:
    path = db_path(getattr(args, "db", None))
    if args.list or args.compare:
        return _read_only(args, path)
    if not args.models or not (args.prompt_file or args.prompt):
        print("llmmon bench: give --models and --prompt-file (or --prompt), or --list / --compare", file=sys.stderr)
        return 2
    try:
        prompts = read_prompt_file(args.prompt_file) if args.prompt_file else [BenchPrompt(args.prompt)]
    except PromptFileError as exc:
        print(f"llmmon bench: {exc}", file=sys.stderr)
        return 2
    settings, _problems = load_settings()
    url = ""
    if args.server:
        url = (args.server if "://" in args.server else f"http://{args.server}").rstrip("/")
        if not any(host_port(s.url) == host_port(url) for s in settings.servers):
            settings.servers.append(ServerEntry(url=url, kind=args.kind))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return _run_benchmark(args, settings, url, models, tuple(prompts))


SERVER_WAIT_S = 15.0


def _server(runtime: Runtime, url: str, stop: threading.Event) -> Health | str:
    """The LLM server to benchmark as the runtime's discovery found it (the one at ``url``, or
    the first one up), or why there is none."""
    deadline = time.monotonic() + SERVER_WAIT_S
    while not stop.is_set():
        servers = [h for h in list(runtime.hub.health.values()) if is_server_kind(h.kind) and h.url
                   and (not url or host_port(h.url) == host_port(url))]
        up = sorted((h for h in servers if h.state == HealthState.UP), key=lambda h: h.source)
        if up:
            return up[0]
        if time.monotonic() > deadline:
            reasons = "; ".join(f"{h.source}: {h.reason}" for h in servers if h.reason)
            where = url or f"the default local ports: {where_to_start()}"
            return f"no LLM server up at {where}" + (f" ({reasons})" if reasons else "")
        stop.wait(0.1)
    return "stopped"


def _polled(runtime: Runtime, server: str, after: float, stop: threading.Event) -> bool:
    """Wait until the server's collector has read it after ``after``."""
    deadline = time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline and not stop.is_set():
        health = runtime.hub.health.get(server)
        if health is not None and health.state == HealthState.UP and health.ts > after:
            return True
        stop.wait(0.1)
    return False


def _run_benchmark(args: argparse.Namespace, settings: Settings, url: str, models: list[str],
                   prompts: tuple[BenchPrompt, ...]) -> int:
    from app.runtime import Runtime  # the collectors: only when a benchmark runs

    name = args.name or f"{', '.join(models)} {time.strftime('%Y-%m-%d %H:%M')}"
    runtime = Runtime.create(getattr(args, "db", None), settings=settings, session_name=f"bench {name}")
    runtime.start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        found = _server(runtime, url, stop)
        if isinstance(found, str):
            print(f"llmmon bench: {found}", file=sys.stderr)
            return 2
        entry = next((s for s in settings.servers if host_port(s.url) == host_port(found.url)), None)
        key = get_secret(entry.api_key_ref) if entry is not None and entry.api_key_ref else None
        config = BenchmarkConfig(name, tuple(PromptTarget(found.source, found.url, found.kind, m, key) for m in models),
                                 prompts, args.repeat, args.concurrency, args.temperature, args.max_tokens, args.seed)
        return _bench(runtime, config, stop)
    finally:
        runtime.stop()


def _bench(runtime: Runtime, config: BenchmarkConfig, stop: threading.Event) -> int:
    done = threading.Event()

    def progress(result: BenchResult) -> None:
        figures = f"TTFT {result.ttft_s:.3f} s, " if result.ttft_s is not None else ""
        figures += f"{result.tokens_per_s:.1f} tokens/s" if result.tokens_per_s is not None else ""
        outcome = f"{result.error_type}: {result.error}" if result.error_type else figures
        print(f"  {len(bench.results)}/{bench.total} {result.model} prompt {result.prompt_index + 1} "
              f"repeat {result.repeat + 1}: {outcome}", flush=True)

    bench = BenchmarkRun(config, runtime.hub.publish, runtime.store, on_result=progress,
                         on_finished=lambda _run: done.set())
    server = config.targets[0].server
    print(f"llmmon bench: {config.name!r}: {len(config.targets)} model(s) × {len(config.prompts)} prompt(s) × "
          f"{config.repeat} repeats on {server}, "
          f"{'one at a time' if config.concurrency == 1 else f'{config.concurrency} at once'}", flush=True)
    # The server's own counters need a reading before the first request and one after the last.
    _polled(runtime, server, time.time(), stop)
    bench.start()
    while not done.wait(0.2):  # short waits keep Ctrl-C responsive
        if stop.is_set():
            bench.cancel()
    bench.join()
    _polled(runtime, server, time.time(), stop)
    if bench.status == "failed":
        print(f"llmmon bench: {bench.error}", file=sys.stderr)
        return 1
    print(f"\nbenchmark #{bench.benchmark_id} {config.name!r} {bench.status}\n{summary_text(bench.results)}")
    return 0 if bench.status == "done" and bench.results else 1


def _read_only(args: argparse.Namespace, path: Path) -> int:
    if not path.exists():
        print(f"llmmon bench: no database at {path}", file=sys.stderr)
        return 2
    try:
        conn = connect(path, readonly=True)
        if args.list:
            runs = list_benchmarks(conn)
            for info in runs:
                c = info.config
                print(f"{info.label}  {info.status}  {', '.join(t.model for t in c.targets)}  "
                      f"{len(c.prompts)} prompt(s) × {c.repeat}")
            if not runs:
                print("no benchmarks stored yet")
            return 0
        a, b = (find_benchmark(conn, ref) for ref in args.compare)
        print(f"A = {a.label}\nB = {b.label}\n")
        print(comparison_text(benchmark_results(conn, a.id), benchmark_results(conn, b.id)))
        return 0
    except LookupError as exc:
        print(f"llmmon bench: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"llmmon bench: cannot read {path}: {exc}", file=sys.stderr)
        return 1
