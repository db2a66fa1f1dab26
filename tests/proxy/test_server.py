"""The metering proxy with the official ``ollama`` and ``openai`` clients, over loopback,
against a simulated server replaying recorded real answers: clients get exactly what the
server sent, and each request's record has the server's exact counts."""
from __future__ import annotations

import hashlib

import httpx
import ollama
import openai
import psutil
import pytest

from app.proxy import ForwardOptions, ProxyServer
from tests.sim.upstream import chunks_of, is_usage_only
from tests.support import wait_until
from tests.support.proxy import Proxied, json_chunks, recorded_json, start_proxied

NS = 1e-9


def openai_client(p: Proxied) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key="sk-test", max_retries=0)


def test_ollama_generate_stream_through_the_official_client_is_counted_exactly(proxied: Proxied) -> None:
    final = json_chunks("ollama_generate_stream_counts.ndjson")[-1]
    client = ollama.Client(host=proxied.url)
    parts = list(client.generate(model="llama3.2", prompt="Why is the sky blue?", stream=True))
    assert "".join(p.response for p in parts) == "The"
    assert parts[-1].done and parts[-1].eval_count == final["eval_count"]
    (rec,) = proxied.records.wait(1)
    assert (rec.server, rec.endpoint, rec.model, rec.status, rec.stream) == (
        proxied.proxy.name, "/api/generate", "llama3.2", 200, True)
    assert rec.prompt_tokens == final["prompt_eval_count"] == 26
    assert rec.completion_tokens == final["eval_count"] == 259
    assert not rec.tokens_estimated
    assert rec.server_tokens_per_s == pytest.approx(final["eval_count"] / (final["eval_duration"] * NS))
    assert rec.prompt_tokens_per_s == pytest.approx(final["prompt_eval_count"] / (final["prompt_eval_duration"] * NS))
    assert rec.load_s == pytest.approx(final["load_duration"] * NS)
    assert rec.ttft_s is not None and 0 < rec.ttft_s <= rec.latency_s
    assert rec.ok and rec.client == "127.0.0.1"
    assert rec.bytes_out == len(proxied.up.requests[-1].sent)


def test_ollama_chat_stream_counts_come_from_the_final_line(proxied: Proxied) -> None:
    # The docs' streamed chat ends with a line without "message", which the official client
    # rejects, so this one is read with httpx; the meter only needs the counts in it.
    final = json_chunks("ollama_chat_stream.ndjson")[-1]
    with httpx.Client() as client:
        client.post(proxied.url + "/api/chat", json={"model": "llama3.2", "messages": []}).raise_for_status()
    (rec,) = proxied.records.wait(1)
    assert (rec.prompt_tokens, rec.completion_tokens) == (final["prompt_eval_count"], final["eval_count"]) == (26, 282)
    assert rec.server_tokens_per_s == pytest.approx(final["eval_count"] / (final["eval_duration"] * NS))


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?"}),
    ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "tiny-llama", "stream": True, "messages": []}),
    ("/v1/chat/completions", {"model": "tiny-llama", "stream": False, "messages": []}),
])
def test_client_receives_byte_for_byte_what_the_server_sent(proxied: Proxied, path: str, body: dict) -> None:
    with httpx.Client() as client, client.stream("POST", proxied.url + path, json=body) as r:
        received = b"".join(r.iter_raw())
        content_type = r.headers["content-type"]
    sent = proxied.up.requests[-1]
    # The server marks its answer complete once write_eof() returns, which on a busy machine can
    # be after the client (through the proxy) already has the end of the body.
    wait_until(lambda: sent.completed, what="the simulated server to finish its answer")
    assert received == bytes(sent.sent)
    assert content_type.split(";")[0] in ("application/x-ndjson", "text/event-stream", "application/json")
    (rec,) = proxied.records.wait(1)
    assert rec.bytes_out == len(received)


def test_ollama_generate_non_streaming_counts_and_done_reason(proxied: Proxied) -> None:
    body = recorded_json("ollama_generate.json")
    answer = ollama.Client(host=proxied.url).generate(model="gemma4", prompt="Hello", stream=False)
    assert answer.response == body["response"]
    (rec,) = proxied.records.wait(1)
    assert not rec.stream and rec.ttft_s is None
    assert (rec.prompt_tokens, rec.completion_tokens) == (body["prompt_eval_count"], body["eval_count"])
    assert rec.finish_reason == body["done_reason"] == "stop"
    assert rec.server_tokens_per_s == pytest.approx(body["eval_count"] / (body["eval_duration"] * NS))
    assert rec.load_s == pytest.approx(body["load_duration"] * NS)


def test_stream_without_counts_is_chunk_counted_and_marked_estimated(proxied: Proxied) -> None:
    proxied.up.routes["/api/generate"] = ("ollama_generate_stream.ndjson", "ollama_generate.json", True)
    lines = json_chunks("ollama_generate_stream.ndjson")
    text = "".join(p.response for p in ollama.Client(host=proxied.url).generate(
        model="gemma3", prompt="question", stream=True))
    assert text == "".join(line["response"] for line in lines)
    (rec,) = proxied.records.wait(1)
    assert rec.tokens_estimated
    assert rec.completion_tokens == sum(1 for line in lines if line["response"]) == 7
    assert rec.prompt_tokens is None and rec.server_tokens_per_s is None
    assert rec.finish_reason == "stop"


def test_openai_stream_with_include_usage_has_exact_usage(proxied: Proxied) -> None:
    usage = json_chunks("vllm_stream.sse")[-1]["usage"]
    stream = openai_client(proxied).chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == usage["completion_tokens"]
    (rec,) = proxied.records.wait(1)
    counted = (rec.prompt_tokens, rec.completion_tokens)
    assert counted == (usage["prompt_tokens"], usage["completion_tokens"]) == (18, 48)
    assert not rec.tokens_estimated and rec.finish_reason == "length" and rec.model == "tiny-llama"


def test_openai_stream_without_usage_is_estimated_and_client_gets_the_text(proxied: Proxied) -> None:
    events = [e for e in json_chunks("vllm_stream.sse") if e["choices"]]
    stream = openai_client(proxied).chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "count"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    (rec,) = proxied.records.wait(1)
    assert rec.tokens_estimated
    # One chunk per token, some with empty text: the count matches what vLLM's usage said.
    assert rec.completion_tokens == json_chunks("vllm_stream.sse")[-1]["usage"]["completion_tokens"] == 48


def test_llama_cpp_python_stream_has_no_usage_so_counts_are_estimated(proxied: Proxied) -> None:
    proxied.up.routes["/v1/chat/completions"] = ("lcp_stream.sse", "lcp_chat.json", False)
    events = json_chunks("lcp_stream.sse")
    stream = openai_client(proxied).chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True})  # llama-cpp-python ignores it
    list(stream)
    (rec,) = proxied.records.wait(1)
    assert rec.tokens_estimated and rec.prompt_tokens is None
    assert rec.completion_tokens == sum(1 for e in events if "content" in e["choices"][0]["delta"])


def test_llama_server_timings_are_the_server_reported_speeds(proxied: Proxied) -> None:
    proxied.up.routes["/v1/chat/completions"] = ("llamaserver_stream.sse", "llamaserver_chat.json", False)
    last = json_chunks("llamaserver_stream.sse")[-1]
    usage, timings = last["usage"], last["timings"]
    list(openai_client(proxied).chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True}))
    whole = recorded_json("llamaserver_chat.json")
    answer = openai_client(proxied).chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "x"}])
    assert answer.usage.completion_tokens == whole["usage"]["completion_tokens"]
    streamed, single = proxied.records.wait(2)
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert streamed.completion_tokens == timings["predicted_n"] == 48
    assert streamed.server_tokens_per_s == pytest.approx(timings["predicted_per_second"])
    assert streamed.prompt_tokens_per_s == pytest.approx(timings["prompt_per_second"])
    assert single.server_tokens_per_s == pytest.approx(whole["timings"]["predicted_per_second"])
    assert (single.prompt_tokens, single.completion_tokens) == (29, 32)
    assert not streamed.tokens_estimated and not single.tokens_estimated


def test_openai_non_streaming_usage(proxied: Proxied) -> None:
    body = recorded_json("vllm_chat.json")
    answer = openai_client(proxied).chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content == body["choices"][0]["message"]["content"]
    (rec,) = proxied.records.wait(1)
    assert (rec.prompt_tokens, rec.completion_tokens) == (23, 32)
    assert not rec.stream and rec.finish_reason == "length" and rec.client_tokens_per_s > 0


def test_include_usage_opt_in_gives_exact_counts_and_strips_the_extra_chunk() -> None:
    p = start_proxied(ForwardOptions(include_usage=True))
    try:
        usage = json_chunks("vllm_stream.sse")[-1]["usage"]
        with httpx.Client() as client, client.stream(
                "POST", p.url + "/v1/chat/completions",
                json={"model": "tiny-llama", "stream": True, "messages": []}) as r:
            received = b"".join(r.iter_raw())
        sent = bytes(p.up.requests[-1].sent)
        assert b'"include_usage":true' in p.up.requests[-1].body
        # The client gets what it asked for: the server's bytes minus the usage chunk.
        assert received == b"".join(c for c in chunks_of("vllm_stream.sse") if not is_usage_only(c))
        assert len(sent) > len(received)
        chunks = list(openai_client(p).chat.completions.create(
            model="tiny-llama", messages=[], stream=True))
        assert all(c.usage is None for c in chunks)
        first, second = p.records.wait(2)
        for rec in (first, second):
            assert (rec.prompt_tokens, rec.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
            assert not rec.tokens_estimated
    finally:
        p.proxy.stop()
        p.up.stop()


def test_any_method_and_path_passes_with_headers_minus_hop_by_hop(proxied: Proxied) -> None:
    body = bytes(range(256)) * 40
    with httpx.Client() as client:
        r = client.request("PATCH", proxied.url + "/sim/echo?x=1&y=%20z", content=body,
                           headers={"X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped",
                                    "Authorization": "Bearer sk-abc"})
    echo = r.json()
    assert (echo["method"], echo["raw_path"]) == ("PATCH", "/sim/echo?x=1&y=%20z")
    assert echo["size"] == len(body)
    assert echo["sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["X-Custom"] == "kept" and echo["headers"]["Authorization"] == "Bearer sk-abc"
    assert "X-Hop" not in echo["headers"]
    assert r.headers["X-Sim"] == "echo"
    models = openai_client(proxied).models.list()  # GET /v1/models: passes, is not a request record
    assert [m.id for m in models.data] == [m["id"] for m in recorded_json("vllm_models.json")["data"]]
    assert proxied.records.items == []


def test_content_is_stored_only_on_opt_in_and_capped(proxied: Proxied) -> None:
    ollama.Client(host=proxied.url).chat(model="llama3.2", messages=[{"role": "user", "content": "secret prompt"}],
                                         stream=False)
    (rec,) = proxied.records.wait(1)
    assert rec.prompt_text is None and rec.response_text is None
    p = start_proxied(ForwardOptions(store_content=True, content_max_chars=10))
    try:
        body = recorded_json("ollama_chat.json")
        ollama.Client(host=p.url).chat(model="llama3.2", messages=[{"role": "user", "content": "secret prompt"}],
                                       stream=False)
        (rec,) = p.records.wait(1)
        assert rec.prompt_text == "user: secret prompt"[:10]
        assert rec.response_text == body["message"]["content"][:10]
    finally:
        p.proxy.stop()
        p.up.stop()


def test_binds_loopback_by_default(proxied: Proxied) -> None:
    listening = [c.laddr for c in psutil.Process().net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == proxied.proxy.port]
    assert [addr.ip for addr in listening] == ["127.0.0.1"]
    assert ProxyServer("http://127.0.0.1:11434").listen_host == "127.0.0.1"


def test_records_take_the_name_the_collectors_gave_the_server() -> None:
    """A server on vLLM's port that discovery found to be plain OpenAI-compatible: the proxy's
    port-based guess ("vllm@...") gives way to the collectors' name."""
    from app.hub import Hub
    from app.records import Health, HealthState, RequestRecord
    from app.runtime import publish_with_known_names

    hub = Hub(store=None)
    seen: list = []
    hub.subscribe(seen.extend)
    hub.publish([Health("openai@127.0.0.1:8000", HealthState.UP, 1.0, kind="openai",
                        url="http://127.0.0.1:8000")])
    publish = publish_with_known_names(hub)
    publish([RequestRecord(ts_start=1.0, server="vllm@127.0.0.1:8000", endpoint="/v1/chat/completions"),
             RequestRecord(ts_start=1.0, server="ollama@127.0.0.1:11434", endpoint="/api/chat")])
    assert [r.server for r in seen if isinstance(r, RequestRecord)] == [
        "openai@127.0.0.1:8000", "ollama@127.0.0.1:11434"]
