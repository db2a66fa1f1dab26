"""Usage and benchmarks against a genuine llama-server: ``main.py bench`` gives one stored row
per repeat and their spread; requests through the proxy and straight to the server count once,
the server's own counter being the total and the proxy's count the part measured per request."""
from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

import main
from app.benchmarks.records import benchmark_results, find_benchmark
from app.benchmarks.stats import summarize
from app.config import ServerEntry, Settings
from app.proxy import ProxyServer
from app.records import HealthState
from app.runtime import Runtime, publish_with_known_names
from app.server_names import server_name
from app.storage.store import connect
from app.usage.report import REQUESTS, SERVER, usage_report
from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.support import query, wait_until

NAME = "llamacpp@real"


def generated_total(server: LlamaServer) -> float:
    """llama-server's own ``llamacpp:tokens_predicted_total``, read here from its /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    found = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.MULTILINE)
    assert found, text[:500]
    return float(found.group(1))


def test_bench_repeats_give_one_row_each_and_a_spread(tmp_path: Path, llama_server: LlamaServer) -> None:
    db = tmp_path / "bench.db"
    before = generated_total(llama_server)
    code = main.main(["--db", str(db), "bench", "--server", llama_server.base_url, "--models", ALIAS,
                      "--prompt", "Tell me about llamas", "--repeat", "4", "--max-tokens", "16", "--seed", "3",
                      "--temperature", "0", "--name", "real"])
    assert code == 0
    conn = connect(db, readonly=True)
    info = find_benchmark(conn, "real")
    results = benchmark_results(conn, info.id)
    assert info.status == "done" and len(results) == 4 and [r.repeat for r in results] == [0, 1, 2, 3]
    assert all(r.ok and r.ttft_s and r.tokens_per_s and r.completion_tokens for r in results)
    (summary,) = summarize(results)
    assert summary.ttft is not None and summary.tokens_per_s is not None
    assert summary.tokens_per_s.p10 <= summary.tokens_per_s.median <= summary.tokens_per_s.p90
    assert summary.tokens_per_s.n == 4
    # The run recorded the server's counters too: every generated token was measured per request.
    (row,) = usage_report(conn, info.started - 60, time.time() + 60).rows
    assert row.completion_tokens == generated_total(llama_server) - before
    assert row.measured["completion_tokens"] == sum(r.completion_tokens or 0 for r in results) == row.completion_tokens
    assert query(db, "SELECT count(*) FROM requests WHERE source='benchmark'") == [(4,)]


def test_proxied_and_direct_requests_count_once(tmp_path: Path, llama_server: LlamaServer) -> None:
    settings = Settings(discover_local=False, servers=[ServerEntry(url=llama_server.base_url, kind="llamacpp",
                                                                   name=NAME)])
    runtime = Runtime.create(tmp_path / "usage.db", settings)
    server = server_name("llamacpp", llama_server.base_url)  # its identity: the name is only shown
    proxy = ProxyServer(llama_server.base_url, kind="llamacpp", publish=publish_with_known_names(runtime.hub))
    runtime.start()
    port = proxy.start()
    try:
        def polled_after(t: float) -> bool:
            health = runtime.hub.health.get(server)
            return health is not None and health.state == HealthState.UP and health.ts > t
        started = time.time()
        wait_until(lambda: polled_after(started + 1.0), timeout=20, what="two polls of the server")
        before = generated_total(llama_server)
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
        through = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        measured = sum(through.chat.completions.create(model=ALIAS, messages=messages, max_tokens=16, temperature=0,
                                                       seed=5).usage.completion_tokens for _ in range(2))
        direct = httpx.post(f"{llama_server.base_url}/v1/chat/completions", timeout=30, json={
            "model": ALIAS, "messages": messages, "max_tokens": 16, "temperature": 0, "seed": 5}).json()
        through.close()
        finished = time.time()
        wait_until(lambda: polled_after(finished), timeout=20, what="a poll after the last request")
        increase = generated_total(llama_server) - before
        runtime.store.flush()
        (row,) = usage_report(runtime.store.reader(), started - 60, time.time() + 60).rows
    finally:
        proxy.stop()
        runtime.stop()
    assert increase == measured + direct["usage"]["completion_tokens"]
    assert (row.server, row.model) == (server, ALIAS)
    assert runtime.display_name(row.server) == NAME
    assert row.completion_tokens == increase                 # the server's counter is the total
    assert row.measured["completion_tokens"] == measured     # the proxied part, not added again
    assert row.sources["completion_tokens"] == {SERVER}
    assert row.requests == 2 and row.sources["requests"] == {REQUESTS}  # llama.cpp counts no requests
