"""Meter benchmark: one huge NDJSON line (a server that sends 100 MB without a newline).

    .venv/bin/python bench/meter_lines.py [--mb 100]

Prints:

1. the meter alone: the time to read an N MB line fed in 64 KiB chunks (how aiohttp hands the
   body over) followed by Ollama's final line, and the meter's peak traced memory;
2. end to end: a fast local upstream streams that line through llmmon's proxy to a reader, each
   in its own process, while another client (this process) sends small non-streaming requests
   one after another through the same proxy; the big stream's time, and the small requests'
   latency p50 / max while it runs, next to their latency on an idle proxy.

3. for comparison, the meter's CPU time per chunk on ordinary recorded streams (67 SSE events
   of vLLM, 7 NDJSON lines of Ollama's docs): ``time.process_time``, best of 5 × 2,000 streams.

Run it from an older checkout to get the "before" figures (the script only uses
``app.proxy.meter.Meter`` and ``app.proxy.ProxyServer``).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 64 * 1024
HEAD = b'{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","response":"'
TAIL = (b'","done":false}\n{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"",'
        b'"done":true,"prompt_eval_count":26,"eval_count":259,"eval_duration":4232710000}\n')
SMALL = b'{"model":"tiny-llama","messages":[{"role":"user","content":"hi"}],"stream":false}'
CHAT = (ROOT / "tests" / "sim" / "recordings" / "streams" / "vllm_chat.json").read_bytes()


def meter_alone(mb: int) -> None:
    from app.proxy.meter import Meter
    from app.records import RequestRecord

    piece = b"x" * CHUNK
    rec = RequestRecord(ts_start=0.0, server="bench", endpoint="/api/generate", status=200)
    meter = Meter(rec, 0.0, "application/x-ndjson")
    tracemalloc.start()
    t = time.perf_counter()
    meter.feed(HEAD, 0.0)
    for _ in range(mb * 2**20 // CHUNK):
        meter.feed(piece, 0.0)
    meter.feed(TAIL, 1.0)
    meter.finish(1.0)
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  {mb} MB line in {CHUNK // 1024} KiB chunks: {elapsed:.3f} s "
          f"({mb / elapsed:,.0f} MB/s), peak traced memory {peak / 2**20:.1f} MiB, "
          f"completion_tokens {rec.completion_tokens}")


def ordinary_streams() -> None:
    from app.proxy.meter import Meter
    from app.records import RequestRecord

    for name, content_type in (("vllm_stream_include_usage.sse", "text/event-stream"),
                               ("ollama_generate_stream.ndjson", "application/x-ndjson")):
        data = (ROOT / "tests" / "sim" / "recordings" / "streams" / name).read_bytes()
        sep = b"\n\n" if name.endswith(".sse") else b"\n"
        chunks = [c + sep for c in data.split(sep) if c.strip()]
        best = math.inf
        for _ in range(5):
            t = time.process_time()
            for _ in range(2000):
                meter = Meter(RequestRecord(ts_start=0.0, server="bench", endpoint="/x", status=200), 0.0,
                              content_type)
                for i, chunk in enumerate(chunks):
                    meter.feed(chunk, i * 0.001)
                meter.finish(1.0)
            best = min(best, (time.process_time() - t) / 2000)
        print(f"  {name}: {len(chunks)} chunks, {best * 1e6 / len(chunks):.2f} µs CPU per chunk")


# ---------------------------------------------------------------- the two servers (children)
def serve_upstream(port: int, mb: int) -> None:
    """Streams the huge line on /api/generate as fast as the proxy reads it; answers the
    recorded chat on anything else."""
    from aiohttp import web

    piece = b"x" * CHUNK

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        if request.path != "/api/generate":
            return web.Response(body=CHAT, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(HEAD)
        for _ in range(mb * 2**20 // CHUNK):
            await response.write(piece)
        await response.write(TAIL)
        await response.write_eof()
        return response

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_llmmon(port: int, upstream: str) -> None:
    from app.proxy import ProxyServer

    logging.basicConfig(level=logging.ERROR)
    proxy = ProxyServer(upstream, listen_port=port, publish=lambda records: None, name="ollama@bench")
    proxy.start()
    print("ready", flush=True)
    sys.stdin.read()


def start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_big(port: int) -> None:
    """The big stream's reader (a child): reads it all, prints the size and when it started and
    ended (``perf_counter`` is the system's monotonic clock: the parent's readings compare)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    t = time.perf_counter()
    conn.request("POST", "/api/generate", body=b'{"model":"llama3.2","prompt":"q"}')
    response = conn.getresponse()
    size = 0
    while chunk := response.read1(1 << 20):
        size += len(chunk)
    print(size, t, time.perf_counter(), flush=True)


async def end_to_end(port: int) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def small() -> tuple[float, float]:
            t = time.perf_counter()
            async with session.post(base + "/v1/chat/completions", data=SMALL) as r:
                await r.read()
            return t, time.perf_counter()

        for _ in range(50):  # warm-up
            await small()
        idle = [b - a for a, b in [await small() for _ in range(300)]]

        reader = start("--read-big", str(port))
        reader.stdin.write("go\n")
        reader.stdin.flush()
        during = []
        while reader.poll() is None:
            during.append(await small())
        size, began, end = (float(x) for x in reader.stdout.readline().split())
    elapsed = end - began
    busy = [b - a for a, b in during if b > began and a < end]  # those that overlapped the stream
    print(f"  big stream: {size / 2**20:.0f} MiB through the proxy in {elapsed:.2f} s "
          f"({size / 2**20 / elapsed:,.0f} MiB/s)")
    print(f"  small requests on an idle proxy: p50 {statistics.median(idle) * 1000:.2f} ms, "
          f"max {max(idle) * 1000:.2f} ms")
    print(f"  small requests during the big stream ({len(busy)} of them): "
          f"p50 {statistics.median(busy) * 1000:.2f} ms, max {max(busy) * 1000:.2f} ms")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the meter's "line over the cap" warning is expected
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    print("The meter alone:")
    meter_alone(args.mb)
    print("The meter on ordinary streams:")
    ordinary_streams()
    up_port, px_port = free_port(), free_port()
    children = [start("--serve-upstream", str(up_port), str(args.mb)),
                start("--serve-llmmon", str(px_port), f"http://127.0.0.1:{up_port}")]
    try:
        print("Through the proxy (upstream, proxy and clients in separate processes):")
        asyncio.run(end_to_end(px_port))
    finally:
        for child in children:
            child.stdin.close()
            child.terminate()
            child.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-llmmon":
        serve_llmmon(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--read-big":
        read_big(int(sys.argv[2]))
    else:
        main()
