"""Proxy benchmark: the same fast local upstream reached directly, through a minimal un-metered
passthrough (the same aiohttp stack, no meter, no records) and through llmmon's metering proxy
(recording every request into a real Store), all in one run, each in its own process.

    .venv/bin/python bench/proxy_overhead.py [--requests 3000] [--rss-requests 10000]

Prints: added latency p50/p99 for non-streaming requests, added time to first byte for
streams, CPU ms per request of each proxy process, throughput at 1/8/32 concurrent streams as
a ratio to direct (paced like a fast GPU, 5 ms per token, and unpaced: pure CPU), and the
proxy's RSS after 1k, 10k and 20k requests. Targets (docs/architecture.md, "Performance
bars"): +1 ms p50, +5 ms p99, >= 90 % of direct throughput at 32 streams, flat memory.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDINGS = ROOT / "tests" / "sim" / "recordings" / "streams"
STREAM_EVENTS = [e + b"\n\n" for e in (RECORDINGS / "vllm_stream_include_usage.sse").read_bytes().split(b"\n\n")
                 if e.strip()]
CHAT = (RECORDINGS / "vllm_chat.json").read_bytes()
BODY = b'{"model":"tiny-llama","messages":[{"role":"user","content":"hi"}],"stream":false}'
STREAM_BODY = b'{"model":"tiny-llama","messages":[{"role":"user","content":"hi"}],"stream":true}'


# ---------------------------------------------------------------- the three servers (children)
async def listen_forever(handle, port: int) -> None:
    from aiohttp import web

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def serve_upstream(port: int) -> None:
    """A fast vLLM-like upstream: the recorded chat answer, or the recorded stream (65 events)
    written as fast as possible or paced by ``?pace_ms=``."""
    import uvloop
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body:
            return web.Response(body=CHAT, content_type="application/json")
        pace = float(request.query.get("pace_ms", "0")) / 1000
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in STREAM_EVENTS:
            if pace:
                await asyncio.sleep(pace)
            await response.write(event)
        await response.write_eof()
        return response

    uvloop.run(listen_forever(handle, port))


def serve_passthrough(port: int, upstream: str) -> None:
    """The minimal passthrough: aiohttp server → aiohttp client, bytes only."""
    import aiohttp
    import uvloop
    from aiohttp import web

    from app.proxy.forward import forward_headers

    async def main() -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            body = await request.read()
            async with session.request(request.method, upstream + request.raw_path, data=body,
                                       headers=forward_headers(request.headers, drop_length=True)) as up:
                response = web.StreamResponse(status=up.status, headers=forward_headers(up.headers))
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        await listen_forever(handle, port)

    uvloop.run(main())


def serve_llmmon(port: int, upstream: str, db: str) -> None:
    """llmmon's proxy, publishing to a hub with a real SQLite store (the app's full path)."""
    from app.hub import Hub
    from app.proxy import ProxyServer
    from app.request_stats import RequestStats
    from app.storage.store import Store

    store = Store(Path(db))
    store.start()
    hub = Hub(store)
    stats = RequestStats(hub.publish)
    hub.subscribe(stats)
    proxy = ProxyServer(upstream, listen_port=port, publish=hub.publish, name="vllm@bench")
    stats.watch_active(proxy.name, lambda: proxy.active_requests)
    stats.start()
    proxy.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin


# ---------------------------------------------------------------- measuring (parent)
def start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sequential(port: int, n: int, path: str, body: bytes, first_byte: bool = False) -> list[float]:
    """Latency (or time to first byte) of ``n`` requests one after another on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for i in range(n + 100):
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if first_byte:
            response.read1(1)  # the first byte of the body
            ttfb = time.perf_counter() - t
        response.read()
        if i >= 100:  # warm-up excluded
            out.append(ttfb if first_byte else time.perf_counter() - t)
    conn.close()
    return out


async def concurrent_streams(port: int, streams: int, per_stream: int, pace_ms: float) -> float:
    """Streams per second with ``streams`` clients each reading ``per_stream`` streams."""
    import aiohttp
    url = f"http://127.0.0.1:{port}/v1/chat/completions?pace_ms={pace_ms:g}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            for _ in range(per_stream):
                async with session.post(url, data=STREAM_BODY) as r:
                    async for _chunk in r.content.iter_any():
                        pass
        await worker()  # warm-up
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return streams * per_stream / (time.perf_counter() - t)


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rss-requests", type=int, default=10_000)
    args = parser.parse_args()
    import uvloop

    up_port, pt_port, px_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    with tempfile.TemporaryDirectory() as tmp:
        children = [start("--serve-upstream", str(up_port)),
                    start("--serve-passthrough", str(pt_port), upstream),
                    start("--serve-llmmon", str(px_port), upstream, str(Path(tmp) / "bench.db"))]
        names = ("upstream", "passthrough", "llmmon")
        ps = {name: psutil.Process(c.pid) for name, c in zip(names, children, strict=True)}
        targets = {"direct": up_port, "passthrough": pt_port, "llmmon": px_port}
        try:
            print(f"Non-streaming chat, {args.requests} sequential requests (keep-alive), p50 / p99 ms:")
            lat, cpu = {}, {}
            for name, port in targets.items():
                proc = ps.get(name)
                c0 = cpu_s(proc) if proc else 0.0
                lat[name] = sequential(port, args.requests, "/v1/chat/completions", BODY)
                cpu[name] = (cpu_s(proc) - c0) / (args.requests + 100) * 1000 if proc else 0.0
            d50, d99 = quantile(lat["direct"], 0.5), quantile(lat["direct"], 0.99)
            for name, values in lat.items():
                p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
                extra = "" if name == "direct" else (
                    f"   added +{(p50 - d50) * 1000:.3f} / +{(p99 - d99) * 1000:.3f} ms, "
                    f"proxy CPU {cpu[name]:.3f} ms/request")
                print(f"  {name:12s} {p50 * 1000:7.3f} / {p99 * 1000:7.3f}{extra}")

            print("Streaming chat (65 SSE events), time to first byte, p50 / p99 ms:")
            ttfb, cpu = {}, {}
            n = args.requests // 3
            for name, port in targets.items():
                proc = ps.get(name)
                c0 = cpu_s(proc) if proc else 0.0
                ttfb[name] = sequential(port, n, "/v1/chat/completions", STREAM_BODY, first_byte=True)
                cpu[name] = (cpu_s(proc) - c0) / (n + 100) * 1000 if proc else 0.0
            d50 = quantile(ttfb["direct"], 0.5)
            for name, values in ttfb.items():
                p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
                extra = "" if name == "direct" else (
                    f"   added +{(p50 - d50) * 1000:.3f} ms, proxy CPU {cpu[name]:.3f} ms/stream")
                print(f"  {name:12s} {p50 * 1000:7.3f} / {p99 * 1000:7.3f}{extra}")

            for pace in (5.0, 0.0):
                kind = ("paced 5 ms/token (a fast GPU)" if pace
                        else "unpaced (CPU-bound: client, proxy and upstream share 2 cores)")
                print(f"Concurrent streams, {kind}: streams/s, ratio to direct")
                for streams in (1, 8, 32):
                    per = max(2, 16 // streams) if pace else max(4, 256 // streams)
                    rates = {name: uvloop.run(concurrent_streams(port, streams, per, pace))
                             for name, port in targets.items()}
                    print(f"  {streams:2d} streams: " + ", ".join(
                        f"{name} {rate:7.1f}" + ("" if name == "direct" else f" ({rate / rates['direct']:.0%})")
                        for name, rate in rates.items()))

            print(f"llmmon proxy RSS over {2 * args.rss_requests} non-streaming requests (MiB):")
            rss = [(0, ps["llmmon"].memory_info().rss)]
            done = 0
            for checkpoint in (1000, args.rss_requests, 2 * args.rss_requests):
                sequential(px_port, checkpoint - done - 100, "/v1/chat/completions", BODY)
                done = checkpoint
                rss.append((checkpoint, ps["llmmon"].memory_info().rss))
            print("  " + ", ".join(f"after {n:,}: {r / 2**20:.1f}" for n, r in rss)
                  + f"   ({args.rss_requests:,}→{2 * args.rss_requests:,}: "
                  f"{(rss[-1][1] - rss[-2][1]) / 2**20:+.1f} MiB)")
        finally:
            for child in children:
                child.stdin.close()
                child.terminate()
                child.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--serve-"):
        mode, rest = sys.argv[1], sys.argv[2:]
        {"--serve-upstream": lambda: serve_upstream(int(rest[0])),
         "--serve-passthrough": lambda: serve_passthrough(int(rest[0]), rest[1]),
         "--serve-llmmon": lambda: serve_llmmon(int(rest[0]), rest[1], rest[2])}[mode]()
    else:
        main()
