"""Tokens/s of a real llama.cpp server, directly and through the llmmon proxy, in one run.

    .venv/bin/python bench/llamacpp_proxy.py [--rounds 30] [--tokens 256]

Starts ``llama-server`` (from ``tests/requirements.txt``) with the tiny test model, then
alternates direct and proxied streamed chat completions with the official ``openai`` client
(alternating cancels drift from other load on the machine). Reports per path the decode speed
the server itself reported (``timings.predicted_per_second``), the speed the client saw
(tokens after the first / time from first to last chunk) and the whole request time, then the
aggregate tokens/s of 8 concurrent streams. Ratios are proxy / direct.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
from openai.types.chat import ChatCompletionMessageParam  # noqa: E402

from app.proxy import ProxyServer  # noqa: E402
from tests.real_server.llama_server import ALIAS, LlamaServer  # noqa: E402
from tests.real_server.tiny_gguf import write_tiny_gguf  # noqa: E402

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "write a long story about the water people"}]


def one_stream(client: openai.OpenAI, tokens: int) -> tuple[float, float, float, int]:
    """(server tokens/s, client tokens/s, request seconds, completion tokens) of one stream."""
    start = time.perf_counter()
    first = last = None
    timings: dict = {}
    n = 0
    for chunk in client.chat.completions.create(
            model=ALIAS, messages=PROMPT, max_tokens=tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or now
            last = now
        if chunk.usage:
            n = chunk.usage.completion_tokens
        timings = (chunk.model_extra or {}).get("timings") or timings
    client_rate = (n - 1) / (last - first) if first and last and last > first else 0.0
    return timings["predicted_per_second"], client_rate, time.perf_counter() - start, n


def concurrent(client: openai.OpenAI, tokens: int, streams: int = 8) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        done = list(pool.map(lambda _: one_stream(client, tokens), range(streams)))
    return sum(d[3] for d in done) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_gguf(Path(tmp) / "tiny.gguf")
        server = LlamaServer(model, Path(tmp) / "server.log").start()
        proxy = ProxyServer(server.base_url, kind="llamacpp")
        port = proxy.start()
        try:
            clients = {
                "direct": openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0),
                "proxy": openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0),
            }
            for client in clients.values():
                one_stream(client, args.tokens)  # warm up: connections, prompt cache
            runs: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in clients}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    runs[name].append(one_stream(client, args.tokens))
            together = {name: statistics.median(concurrent(c, args.tokens) for _ in range(3))
                        for name, c in clients.items()}
        finally:
            proxy.stop()
            server.stop()

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[name])

    print(f"{args.rounds} alternating streams of {args.tokens} tokens per path, medians")
    for label, i, unit in (("server-reported decode", 0, "tok/s"), ("client-observed", 1, "tok/s"),
                           ("request time", 2, "ms")):
        scale = 1000.0 if unit == "ms" else 1.0
        d, p = med("direct", i) * scale, med("proxy", i) * scale
        print(f"  {label:24s} direct {d:10.1f} {unit}   proxy {p:10.1f} {unit}   proxy/direct {p / d:.3f}")
    d, p = together["direct"], together["proxy"]
    print(f"  {'8 concurrent, aggregate':24s} direct {d:10.1f} tok/s   proxy {p:10.1f} tok/s   "
          f"proxy/direct {p / d:.3f}")


if __name__ == "__main__":
    main()
