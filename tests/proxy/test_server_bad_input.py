"""The proxy against input that used to stop it or make it record falsehoods, end to end: the
official ``ollama`` and ``openai`` clients (httpx or a raw socket where no official client can
send the input), a real proxy over loopback, the simulated server replaying recorded answers.

Each test names what was wrong before: 1- and 2-token streams lost their counts and speeds,
garbled numbers from the server raised, a client leaving after two chunks was recorded as a
success, a deeply nested body gave a 500 and a row with status 0, a 100 MB line was buffered
quadratically, any ``Host`` was accepted, and a malformed request logged a traceback.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import socket
import threading
from collections.abc import Generator
from typing import Any, cast

import httpx
import ollama
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.proxy import ForwardOptions
from tests.support import wait_until
from tests.support.proxy import Proxied, json_chunks, start_proxied

NS = 1e-9


def openai_client(p: Proxied, headers: dict[str, str] | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key="sk-test", max_retries=0, default_headers=headers)


def sent_objects(p: Proxied) -> list[dict]:
    """What the simulated server really sent for the last request, parsed here."""
    out = []
    for line in bytes(p.up.requests[-1].sent).splitlines():
        text = line.removeprefix(b"data: ").strip()
        if text and text != b"[DONE]":
            out.append(json.loads(text))
    return out


# ---------------------------------------------------------------- any answer at all
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([200, 200, 400, 500]),
       content_type=st.sampled_from(["application/x-ndjson", "text/event-stream", "application/json",
                                     "text/plain"]),
       chunks=st.lists(st.binary(max_size=200) | st.sampled_from([b"\n", b"\n\n", b"data: [DONE]\n\n",
                                                                 b'{"done":true,"eval_count":NaN}\n',
                                                                 b"[" * 5000, b'{"error":' * 3000]),
                       max_size=12))
def test_any_answer_reaches_the_client_unchanged_and_is_recorded(proxied: Proxied, status: int, content_type: str,
                                                                 chunks: list[bytes]) -> None:
    """Whatever the server answers, the client gets it byte for byte, the request is recorded
    with the status it got, and the proxy keeps serving (the next request is recorded too)."""
    proxied.up.raw = (status, content_type, chunks)
    before = len(proxied.records.items)
    with httpx.Client() as client:
        answer = client.post(proxied.url + "/api/generate", json={"model": "m", "prompt": "q"})
        assert (answer.status_code, answer.content) == (status, b"".join(chunks))
        proxied.up.raw = None
        assert client.post(proxied.url + "/v1/chat/completions", json={"model": "m", "messages": []}).is_success
    got, then = proxied.records.wait(before + 2)[before:]
    assert got.status == status and got.bytes_out == len(answer.content)
    assert got.ok == (status == 200 and not got.error_type) and got.error_type in ("", "http", "stream_error")
    assert then.ok and then.completion_tokens == 32


# ---------------------------------------------------------------- 1- and 2-token streams
def test_two_token_openai_stream_keeps_the_servers_counts_and_speed(proxied: Proxied) -> None:
    """llama-server's real answer to max_tokens=2: before, the meter raised on the single gap
    between the two tokens and the record lost its counts and speeds."""
    proxied.up.routes["/v1/chat/completions"] = ("llamaserver_stream_2_tokens.sse", "llamaserver_chat.json", False)
    proxied.up.chunk_delay_s = 0.01
    final = json_chunks("llamaserver_stream_2_tokens.sse")[-1]
    chunks = list(openai_client(proxied).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 2
    (rec,) = proxied.records.wait(1)
    assert rec.ok and rec.finish_reason == "length"
    assert (rec.prompt_tokens, rec.completion_tokens, rec.tokens_estimated) == (
        final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"], False) == (64, 2, False)
    assert rec.server_tokens_per_s == final["timings"]["predicted_per_second"]
    # One gap between the two tokens: it is the mean, median, p99 and max, and gives a speed.
    assert rec.itl_mean_s == rec.itl_p50_s == rec.itl_p99_s == rec.itl_max_s > 0
    assert rec.client_tokens_per_s == pytest.approx(1 / rec.itl_mean_s)


def test_one_token_openai_stream_keeps_its_count_and_no_made_up_speed(proxied: Proxied) -> None:
    proxied.up.routes["/v1/chat/completions"] = ("llamaserver_stream_1_token.sse", "llamaserver_chat.json", False)
    final = json_chunks("llamaserver_stream_1_token.sse")[-1]
    list(openai_client(proxied).chat.completions.create(
        model="tiny", messages=[], max_tokens=1, stream=True, stream_options={"include_usage": True}))
    (rec,) = proxied.records.wait(1)
    assert rec.ok and (rec.completion_tokens, rec.tokens_estimated) == (1, False)
    assert 0 < rec.ttft_s <= rec.latency_s
    # llama.cpp says 0.0 tokens/s for one token: it measured nothing, so nothing is recorded;
    # one token has no gap, so no inter-token latency nor client speed either.
    assert final["timings"]["predicted_per_second"] == 0.0 and rec.server_tokens_per_s is None
    assert rec.itl_mean_s is None and rec.client_tokens_per_s is None


def test_ollama_num_predict_two_and_one(proxied: Proxied) -> None:
    client = ollama.Client(host=proxied.url)
    proxied.up.routes["/api/generate"] = ("ollama_generate_stream.ndjson", "ollama_generate.json", True)
    proxied.up.chunk_delay_s = 0.01
    parts = list(client.generate(model="gemma3", prompt="q", stream=True, options={"num_predict": 2}))
    assert [p.response for p in parts] == ["That", "'", ""] and parts[-1].done_reason == "length"
    (two,) = proxied.records.wait(1)
    # This recording has no counts: the meter's own count, marked estimated, and a real speed.
    assert (two.completion_tokens, two.tokens_estimated, two.finish_reason) == (2, True, "length")
    assert two.itl_mean_s > 0 and two.client_tokens_per_s == pytest.approx(1 / two.itl_mean_s)

    proxied.up.routes["/api/generate"] = ("ollama_generate_stream_counts.ndjson", "ollama_generate.json", True)
    parts = list(client.generate(model="llama3.2", prompt="q", stream=True, options={"num_predict": 1}))
    final = sent_objects(proxied)[-1]
    assert parts[-1].eval_count == final["eval_count"] == 1
    one = proxied.records.wait(2)[1]
    assert (one.completion_tokens, one.tokens_estimated) == (1, False)
    assert one.server_tokens_per_s == pytest.approx(1 / (final["eval_duration"] * NS))


# ---------------------------------------------------------------- garbled numbers
def test_nan_and_absurd_ollama_numbers_are_ignored_not_fatal(proxied: Proxied) -> None:
    """Before, NaN or 1e400 in eval_* raised inside the meter; now they count as not reported."""
    proxied.up.final_fields = {"eval_count": "NaN", "eval_duration": "1e400", "prompt_eval_count": "-5",
                               "load_duration": "1e-320"}
    # The official client rejects such an answer itself, after reading it whole.
    with pytest.raises(pydantic.ValidationError, match="eval_count"):
        ollama.Client(host=proxied.url).generate(model="gemma4", prompt="q", stream=False)
    (whole,) = proxied.records.wait(1)
    assert whole.ok and whole.model == "gemma4" and whole.finish_reason == "stop"
    assert (whole.prompt_tokens, whole.completion_tokens, whole.server_tokens_per_s, whole.load_s) == (
        None, None, None, None)

    # Streamed (read with httpx: the official client stops at the garbled last line).
    proxied.up.routes["/api/generate"] = ("ollama_generate_stream.ndjson", "ollama_generate.json", True)
    with httpx.Client() as client:
        answer = client.post(proxied.url + "/api/generate", json={"model": "gemma3", "prompt": "q"})
    assert answer.content == bytes(proxied.up.requests[-1].sent)
    streamed = proxied.records.wait(2)[1]
    tokens = [o for o in sent_objects(proxied) if o.get("response")]
    assert streamed.ok and (streamed.completion_tokens, streamed.tokens_estimated) == (len(tokens), True)
    assert streamed.server_tokens_per_s is None


def test_garbled_usage_and_timings_fall_back_to_the_exact_count(proxied: Proxied) -> None:
    proxied.up.routes["/v1/chat/completions"] = ("llamaserver_stream.sse", "llamaserver_chat.json", False)
    proxied.up.final_fields = {"usage.completion_tokens": "1e400", "usage.prompt_tokens": "NaN",
                               "timings.predicted_per_second": "NaN", "timings.prompt_per_second": "-3"}
    chunks = list(openai_client(proxied).chat.completions.create(
        model="gemma-3-270m", messages=[], stream=True, stream_options={"include_usage": True}))
    assert math.isinf(chunks[-1].usage.completion_tokens)  # the client got what the server sent
    (rec,) = proxied.records.wait(1)
    timings = sent_objects(proxied)[-1]["timings"]
    assert rec.ok and (rec.completion_tokens, rec.tokens_estimated) == (timings["predicted_n"], False) == (48, False)
    assert rec.prompt_tokens == timings["prompt_n"] + timings["cache_n"]
    assert rec.server_tokens_per_s is None and rec.prompt_tokens_per_s is None


# ---------------------------------------------------------------- a client leaving early
@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_client_leaving_after_two_chunks_is_cancelled(proxied: Proxied, api: str) -> None:
    """Before, the meter raised on two token chunks and that error hid the cancellation: the
    request was recorded as a success."""
    proxied.up.routes["/api/generate"] = ("ollama_generate_stream.ndjson", "ollama_generate.json", True)
    proxied.up.chunk_delay_s = 0.2  # the server is still generating when the client leaves
    if api == "ollama":
        native = ollama.Client(host=proxied.url)
        lines = cast(Generator[ollama.GenerateResponse, None, None],
                     native.generate(model="gemma3", prompt="q", stream=True))
        got = [next(lines).response, next(lines).response]
        lines.close()  # leaves: the connection is closed
        native._client.close()
    else:
        events = openai_client(proxied).chat.completions.create(model="tiny-llama", messages=[], stream=True)
        next(events)  # the role chunk
        got = [next(events).choices[0].delta.content, next(events).choices[0].delta.content]
        events.close()
    assert len(got) == 2
    (rec,) = proxied.records.wait(1)
    assert (rec.error_type, rec.error) == ("cancelled", "client disconnected")
    assert rec.completion_tokens >= 2 and rec.tokens_estimated
    proxied.assert_no_leaks()


def test_openai_client_closing_right_after_done_is_a_success(proxied: Proxied) -> None:
    """The official client hangs up as soon as it reads ``data: [DONE]``, often before the
    body's end arrives; here the server holds that end back, so the client always leaves
    first. Before, such a complete answer was recorded as cancelled."""
    proxied.up.hold_before_end = True
    with openai_client(proxied) as client:
        chunks = list(client.chat.completions.create(model="tiny-llama", messages=[], stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 48
    (rec,) = proxied.records.wait(1)
    assert rec.ok and (rec.completion_tokens, rec.tokens_estimated) == (48, False)
    proxied.up.release()
    proxied.assert_no_leaks()


# ---------------------------------------------------------------- deeply nested JSON
def test_deeply_nested_body_is_forwarded_and_recorded_with_the_servers_answer(proxied: Proxied) -> None:
    """Before: a RecursionError in the proxy, a 500, and a row with status 0 and no error type."""
    deep = b'{"model":"m","prompt":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with httpx.Client() as client:
        answer = client.post(proxied.url + "/api/generate", content=deep)
    upstream = proxied.up.requests[-1]
    assert upstream.body == deep  # forwarded untouched
    assert (answer.status_code, answer.content) == (400, bytes(upstream.sent))
    (rec,) = proxied.records.wait(1)
    assert (rec.status, rec.error_type, rec.error) == (400, "http", answer.json()["error"])
    # The proxy goes on serving.
    assert ollama.Client(host=proxied.url).generate(model="llama3.2", prompt="q", stream=False).done
    assert proxied.records.wait(2)[1].ok


def test_a_fault_inside_the_proxy_costs_one_request_only(proxied: Proxied, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here injected: reading the request body raises) ends that request with a 500 and
    a record saying so; the next request is served."""
    import app.proxy.forward as forward

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(forward, "inspect_body", broken)
    with pytest.raises(ollama.ResponseError) as exc:
        ollama.Client(host=proxied.url).generate(model="m", prompt="q", stream=False)
    assert exc.value.status_code == 500 and "internal error (RuntimeError: injected fault)" in exc.value.error
    (rec,) = proxied.records.wait(1)
    assert (rec.status, rec.error_type) == (500, "internal_error") and "injected fault" in rec.error
    monkeypatch.undo()
    assert ollama.Client(host=proxied.url).generate(model="llama3.2", prompt="q", stream=False).done
    assert proxied.records.wait(2)[1].ok
    assert proxied.up.requests and len(proxied.up.requests) == 1  # the broken one never left


# ---------------------------------------------------------------- one endless line
def test_a_100_mb_line_streams_through_while_other_clients_are_served() -> None:
    """The line passes byte for byte, the counts come from the final line, and while the huge
    line is half-way through (the server holds it there) another client is served."""
    p = start_proxied()
    try:
        p.up.huge_line = 100 * 2**20
        p.up.hold_mid_line = True
        received: dict[str, Any] = {}

        def big() -> None:
            digest, size = hashlib.sha256(), 0
            with httpx.Client(timeout=None) as client, client.stream(
                    "POST", p.url + "/api/generate", json={"model": "llama3.2", "prompt": "q"}) as r:
                for chunk in r.iter_raw():
                    digest.update(chunk)
                    size += len(chunk)
                    received["size"] = size
            received["sha256"] = digest.hexdigest()

        reader = threading.Thread(target=big)
        reader.start()
        wait_until(lambda: received.get("size", 0) >= 50 * 2**20, timeout=120, what="half of the line at the client")
        with openai_client(p) as client:
            assert client.chat.completions.create(model="tiny-llama", messages=[]).usage.completion_tokens == 32
        (other,) = p.records.wait(1)
        assert other.ok and other.endpoint == "/v1/chat/completions"
        assert reader.is_alive() and p.proxy.active_requests == 1
        p.up.release()
        reader.join(120)
        sent = bytes(p.up.requests[0].sent)
        assert received["sha256"] == hashlib.sha256(sent).hexdigest() and len(sent) > 100 * 2**20
        rec = p.records.wait(2)[1]
        final = json_chunks("ollama_generate_stream_counts.ndjson")[-1]
        assert rec.ok and rec.bytes_out == len(sent)
        assert (rec.completion_tokens, rec.tokens_estimated) == (final["eval_count"], False)
        p.assert_no_leaks()
    finally:
        p.up.release()
        p.proxy.stop()
        p.up.stop()


# ---------------------------------------------------------------- Host (DNS rebinding)
def test_only_loopback_host_names_are_served_on_a_loopback_proxy(proxied: Proxied) -> None:
    port = proxied.proxy.port
    assert ollama.Client(host=f"http://localhost:{port}").generate(model="llama3.2", prompt="q", stream=False).done
    with httpx.Client() as client:
        for host in (f"127.0.0.1:{port}", f"[::1]:{port}", "localhost:9999"):  # a tunnel may change the port
            assert client.get(proxied.url + "/v1/models", headers={"Host": host}).status_code == 200
    served = len(proxied.up.requests)

    with pytest.raises(ollama.ResponseError) as native:
        ollama.Client(host=proxied.url, headers={"Host": f"attacker.example:{port}"}).generate(
            model="m", prompt="q", stream=False)
    assert native.value.status_code == 403 and "not allowed" in native.value.error
    with pytest.raises(openai.PermissionDeniedError, match="answers only requests for localhost"):
        openai_client(proxied, {"Host": "127.0.0.1.attacker.example"}).chat.completions.create(
            model="m", messages=[])
    assert len(proxied.up.requests) == served  # the server never saw them
    refused = proxied.records.wait(3)[1:]
    assert [(r.status, r.error_type) for r in refused] == [(403, "forbidden_host")] * 2


# ---------------------------------------------------------------- malformed requests
def test_a_malformed_request_is_one_log_line(proxied: Proxied, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    with socket.create_connection(("127.0.0.1", proxied.proxy.port)) as s:
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.0 400 Bad Request")
    logged = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.INFO]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    (line,) = logged
    assert line.exc_info is None and "\n" not in line.getMessage() and "Content-Length" in line.getMessage()
    assert ollama.Client(host=proxied.url).generate(model="llama3.2", prompt="q", stream=False).done


def test_include_usage_opt_in_with_a_huge_event_passes_it_on() -> None:
    """The usage stripper holds back only small events: a 10 MB event flows on (before, it was
    held whole and re-scanned on every chunk)."""
    p = start_proxied(ForwardOptions(include_usage=True))
    try:
        p.up.huge_line = 10 * 2**20
        with httpx.Client(timeout=60) as client:
            got = client.post(p.url + "/v1/chat/completions",
                              json={"model": "tiny-llama", "stream": True, "messages": []}).content
        sent = bytes(p.up.requests[-1].sent)
        assert b'"usage"' in sent and b'"usage"' not in got  # the chunk the proxy asked for is gone
        assert len(got) > 10 * 2**20 and got.endswith(b"data: [DONE]\n\n")
        (rec,) = p.records.wait(1)
        assert rec.ok and not rec.tokens_estimated
    finally:
        p.proxy.stop()
        p.up.stop()
