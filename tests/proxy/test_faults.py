"""The proxy when things go wrong — upstream cut, client gone, upstream down or hanging, error
lines, big bodies, many streams, slow clients — and its timing truth. Every test ends by
checking that no task, connection or upstream request was left behind."""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import statistics
import time

import httpx
import ollama
import openai
import pytest

from app.proxy import ForwardOptions, ProxyServer
from tests.support import wait_until
from tests.support.proxy import Proxied, Records, json_chunks, recorded_json, start_proxied

OLLAMA_DOCS_STREAM = ("ollama_generate_stream.ndjson", "ollama_generate.json", True)


def _assert_timings_match_both_sides_clocks(rec, sim, t_send: float, arrivals: list[float],
                                            tokens: list[int]) -> None:
    """The record against the clocks on both sides of the proxy (same process, same
    perf_counter), for the chunks ``tokens`` (indexes of the chunks that carry a token, as the
    test parsed them): the proxy starts its clock after the client sent (``t_send``) and before
    the server received (``sim.received_at``), and reads chunk i after the server wrote it
    (``sim.write_times[i]``) and before the client got it (``arrivals[i]``). So TTFT, the gaps
    between tokens (mean and median) and the token rate each lie in a range set by those clocks:
    as narrow as the transport's own latency (about a millisecond on an idle machine), widened
    only by the delays a loaded machine actually put on these chunks. A meter timing the wrong
    chunk, the wrong start or the wrong end falls outside it."""
    w, c = sim.write_times, arrivals
    first, last = tokens[0], tokens[-1]
    assert w[first] - sim.received_at <= rec.ttft_s <= c[first] - t_send
    n_gaps = len(tokens) - 1
    low_gaps = [w[b] - c[a] for a, b in itertools.pairwise(tokens)]   # read b as early, a as late as can be
    high_gaps = [c[b] - w[a] for a, b in itertools.pairwise(tokens)]
    assert (w[last] - c[first]) / n_gaps <= rec.itl_mean_s <= (c[last] - w[first]) / n_gaps
    assert statistics.median(low_gaps) <= rec.itl_p50_s <= statistics.median(high_gaps)
    assert max(low_gaps) <= rec.itl_max_s <= max(high_gaps)
    if rec.client_tokens_per_s is not None:  # (n - 1) tokens over the span from first to last
        n = rec.completion_tokens
        assert (n - 1) / (c[last] - w[first]) <= rec.client_tokens_per_s <= (n - 1) / (w[last] - c[first])


def _server_waited(sim, i: int, seconds: float) -> float:
    """How long the server really waited before chunk ``i`` (at least what the test injected;
    more on a loaded machine)."""
    before = sim.write_times[i - 1] if i else sim.received_at
    waited = sim.write_times[i] - before
    assert waited >= seconds - 0.001  # asyncio's timers never fire early (beyond clock resolution)
    return waited


def test_timing_truth_injected_delays_are_what_is_recorded(proxied: Proxied) -> None:
    proxied.up.routes["/api/generate"] = OLLAMA_DOCS_STREAM  # every line carries text
    proxied.up.first_delay_s, proxied.up.chunk_delay_s = 0.200, 0.020
    t_send = time.perf_counter()
    arrivals = [time.perf_counter() for _ in ollama.Client(host=proxied.url).generate(
        model="gemma3", prompt="q", stream=True)]
    (rec,) = proxied.records.wait(1)
    sim = proxied.up.requests[-1]
    assert len(arrivals) == len(sim.write_times) == 7
    # The server waited 200 ms, then 20 ms between chunks (or longer, if the machine is busy) ...
    waits = [_server_waited(sim, i, 0.200 if i == 0 else 0.020) for i in range(7)]
    # ... and the record holds those waits, up to the latency the clocks saw on this run.
    _assert_timings_match_both_sides_clocks(rec, sim, t_send, arrivals, list(range(7)))
    assert rec.ttft_s >= waits[0] >= 0.199
    # 7 chunks counted (no counts in this stream): 6 tokens after the first, in 6 gaps of 20 ms.
    assert rec.completion_tokens == 7 and rec.tokens_estimated


def test_sse_ttft_is_the_first_chunk_with_content(proxied: Proxied) -> None:
    proxied.up.routes["/v1/chat/completions"] = ("llamaserver_stream.sse", "llamaserver_chat.json", False)
    events = [e for e in json_chunks("llamaserver_stream.sse") if e["choices"]]  # no usage: not asked
    tokens = [i for i, e in enumerate(events) if e["choices"][0]["delta"].get("content")]
    first_text = tokens[0]
    assert first_text == 1  # the first chunk only carries the role
    # The role chunk comes after 30 ms, the first text 150 ms later: a meter timing the role
    # chunk would be ~150 ms short of the lower bound below.
    proxied.up.first_delay_s, proxied.up.chunk_delay_s = 0.030, 0.010
    proxied.up.delays_s = {first_text: 0.150}
    client = openai.OpenAI(base_url=proxied.url + "/v1", api_key="x", max_retries=0)
    t_send = time.perf_counter()
    arrivals = [time.perf_counter() for _ in client.chat.completions.create(model="m", messages=[], stream=True)]
    (rec,) = proxied.records.wait(1)
    sim = proxied.up.requests[-1]
    assert len(arrivals) == len(events) and len(sim.write_times) == len(events) + 1  # + [DONE]
    assert _server_waited(sim, 0, 0.030) + _server_waited(sim, first_text, 0.150) >= 0.179
    _assert_timings_match_both_sides_clocks(rec, sim, t_send, arrivals, tokens)
    assert rec.ttft_s >= sim.write_times[first_text] - sim.received_at >= 0.179


def test_upstream_cut_mid_stream(proxied: Proxied) -> None:
    proxied.up.routes["/api/generate"] = OLLAMA_DOCS_STREAM
    proxied.up.cut_after = 3
    client = ollama.Client(host=proxied.url)
    with pytest.raises(httpx.HTTPError):  # the stream ends with an error, not as if complete
        list(client.generate(model="gemma3", prompt="q", stream=True))
    (rec,) = proxied.records.wait(1)
    assert rec.error_type == "upstream_disconnect" and rec.status == 200 and not rec.ok
    assert rec.completion_tokens == 3 and rec.tokens_estimated
    proxied.up.cut_after = None
    streamed = client.generate(model="gemma3", prompt="q", stream=True)
    assert "".join(p.response for p in streamed) == "That's a fantastic question!"
    assert proxied.records.wait(2)[1].ok
    client._client.close()
    proxied.assert_no_leaks()


def test_client_disconnect_closes_the_upstream_and_is_cancelled(proxied: Proxied) -> None:
    proxied.up.routes["/api/generate"] = OLLAMA_DOCS_STREAM
    proxied.up.chunk_delay_s = 5.0  # the upstream is slow: only the first line comes quickly
    with httpx.Client() as client:
        with client.stream("POST", proxied.url + "/api/generate", json={"model": "gemma3", "prompt": "q"}) as r:
            first = next(r.iter_lines())
            assert json.loads(first)["response"] == "That"
    # Closed long before the upstream's next chunk was due: it saw the proxy hang up.
    wait_until(lambda: proxied.up.requests and proxied.up.requests[-1].disconnected, timeout=2,
               what="the upstream request to be closed")
    (rec,) = proxied.records.wait(1)
    assert rec.error_type == "cancelled" and rec.error == "client disconnected"
    assert rec.latency_s < 2.0
    proxied.assert_no_leaks()
    assert proxied.up.open_connections() == 0


def test_upstream_down_gives_a_clear_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # a port nobody listens on once this socket is closed
    records = Records()
    proxy = ProxyServer(f"http://127.0.0.1:{dead}", publish=records)
    port = proxy.start()
    try:
        with pytest.raises(ollama.ResponseError) as native:
            ollama.Client(host=f"http://127.0.0.1:{port}").generate(model="m", prompt="q")
        assert native.value.status_code == 502
        assert f"127.0.0.1:{dead} is not reachable" in native.value.error
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as compat:
            client.chat.completions.create(model="m", messages=[])
        assert compat.value.status_code == 502
        assert "is not reachable" in compat.value.message
        first, second = records.wait(2)
        assert (first.status, first.error_type) == (502, "upstream_down")
        assert (second.status, second.error_type) == (502, "upstream_down")
    finally:
        proxy.stop()


def test_mid_stream_error_line(proxied: Proxied) -> None:
    proxied.up.routes["/api/generate"] = ("ollama_generate_error_stream.ndjson", "ollama_generate.json", True)
    error = json_chunks("ollama_generate_error_stream.ndjson")[-1]["error"]
    client = ollama.Client(host=proxied.url)
    with pytest.raises(ollama.ResponseError) as exc:
        list(client.generate(model="gemma4", prompt="q", stream=True))
    assert exc.value.error == error
    (rec,) = proxied.records.wait(1)
    assert (rec.status, rec.error_type, rec.error) == (200, "stream_error", error)
    assert rec.completion_tokens == 4 and rec.tokens_estimated
    client._client.close()
    proxied.assert_no_leaks()


def test_http_error_from_the_server_is_recorded(proxied: Proxied) -> None:
    proxied.up.fail = (500, "vllm_enginedead_500.json")
    message = recorded_json("vllm_enginedead_500.json")["error"]["message"]
    client = openai.OpenAI(base_url=proxied.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[])
    (rec,) = proxied.records.wait(1)
    assert (rec.status, rec.error_type, rec.error) == (500, "http", message)
    client.close()
    proxied.assert_no_leaks()


def test_a_closed_keep_alive_connection_is_retried_on_another(proxied: Proxied) -> None:
    client = openai.OpenAI(base_url=proxied.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="m", messages=[])  # leaves a pooled connection
    proxied.up.drop_requests = 1  # the server closes it as the next request arrives
    answer = client.chat.completions.create(model="m", messages=[])
    assert answer.usage.completion_tokens == recorded_json("vllm_chat.json")["usage"]["completion_tokens"]
    assert [r.ok for r in proxied.records.wait(2)] == [True, True]
    proxied.up.drop_requests = 3  # more than the retries: a clear 502, not a hang
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="m", messages=[])
    assert exc.value.status_code == 502 and "closed the connection" in exc.value.message
    assert proxied.records.wait(3)[2].error_type == "upstream_disconnect"
    client.close()
    proxied.assert_no_leaks()


def test_upstream_hang_times_out_with_504() -> None:
    p = start_proxied(ForwardOptions(read_timeout=0.3))
    p.up.hang = True
    try:
        with httpx.Client() as client:
            r = client.post(p.url + "/api/generate", json={"model": "m", "prompt": "q"})
        assert r.status_code == 504 and "no answer" in r.json()["error"]
        (rec,) = p.records.wait(1)
        assert rec.error_type == "timeout"
        p.up.release()
        p.assert_no_leaks()
    finally:
        p.proxy.stop()
        p.up.stop()


def test_64_concurrent_streams(proxied: Proxied) -> None:
    proxied.up.chunk_delay_s = 0.002
    usage = json_chunks("vllm_stream.sse")[-1]["usage"]

    async def run() -> list[bytes]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=60) as client:
            async def one(i: int) -> bytes:
                async with client.stream("POST", proxied.url + "/v1/chat/completions",
                                         json={"model": "tiny-llama", "stream": True, "messages": [],
                                               "stream_options": {"include_usage": True}}) as r:
                    return b"".join([chunk async for chunk in r.aiter_raw()])
            return await asyncio.gather(*(one(i) for i in range(64)))

    bodies = asyncio.run(run())
    sent = {bytes(r.sent) for r in proxied.up.requests}
    assert len(sent) == 1 and all(b == sent.pop() for b in [bodies[0]]) and len(set(bodies)) == 1
    assert bodies[0] == bytes(proxied.up.requests[0].sent)
    records = proxied.records.wait(64)
    assert len(records) == 64
    assert all(r.ok and r.completion_tokens == usage["completion_tokens"] and not r.tokens_estimated
               for r in records)
    proxied.assert_no_leaks()


def test_50_mb_request_body_is_streamed_through(proxied: Proxied) -> None:
    prompt = "x" * (50 * 1024 * 1024)
    body = json.dumps({"model": "tiny-llama", "stream": True, "messages": [{"role": "user", "content": prompt}],
                       "stream_options": {"include_usage": True}}).encode()
    with httpx.Client(timeout=120) as client:
        r = client.post(proxied.url + "/v1/chat/completions", content=body,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.content == bytes(proxied.up.requests[-1].sent)
        echo = client.post(proxied.url + "/sim/echo", content=body).json()
    assert hashlib.sha256(proxied.up.requests[0].body).digest() == hashlib.sha256(body).digest()
    assert (echo["size"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    (rec,) = proxied.records.wait(1)
    assert rec.bytes_in == len(body) and rec.ok
    assert rec.model == "tiny-llama"  # too big to inspect: the model name comes from the answer
    assert rec.completion_tokens == 48
    proxied.assert_no_leaks()


def test_slowloris_client_is_closed_and_does_not_hold_up_others() -> None:
    p = start_proxied(ForwardOptions(body_timeout=0.5), keepalive_timeout=0.5)
    try:
        slow_headers = socket.create_connection(("127.0.0.1", p.proxy.port))
        slow_headers.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never more
        slow_body = socket.create_connection(("127.0.0.1", p.proxy.port))
        slow_body.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{\"model\":")
        # Others are served while both hang on.
        answer = ollama.Client(host=p.url).generate(model="llama3.2", prompt="q", stream=False)
        assert answer.done
        slow_headers.settimeout(10)
        assert slow_headers.recv(100) == b""  # closed by the proxy
        slow_body.settimeout(10)
        reply = b""
        while chunk := slow_body.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"request body took over" in reply
        slow_headers.close()
        slow_body.close()
        records = p.records.wait(2)
        assert sorted(r.error_type for r in records) == ["", "timeout"]
        p.assert_no_leaks()
    finally:
        p.proxy.stop()
        p.up.stop()


def test_stop_ends_in_flight_requests_as_cancelled() -> None:
    p = start_proxied()
    p.up.chunk_delay_s = 5.0
    try:
        with httpx.Client() as client:
            with client.stream("POST", p.url + "/api/generate", json={"model": "m", "prompt": "q"}) as r:
                body = r.iter_raw()  # kept: a dropped iterator closes the response (a disconnect)
                next(body)
                p.proxy.stop()
        (rec,) = p.records.wait(1)
        assert (rec.error_type, rec.error) == ("cancelled", "proxy stopped")
        assert not p.proxy.running
        wait_until(lambda: p.up.in_flight == 0, what="upstream request closed")
    finally:
        p.proxy.stop()
        p.up.stop()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proxy = ProxyServer("http://127.0.0.1:11434", listen_port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            proxy.start()
        assert not proxy.running
