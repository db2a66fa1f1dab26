"""The metering proxy in front of a genuine llama-server, driven by the official ``openai``
client: the client gets exactly what it would get directly, and each request record holds
the counts the server itself reported (``usage`` and llama.cpp's ``timings``)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.proxy import ProxyServer
from app.records import HealthState, RequestRecord
from collectors.llamacpp import LlamaCppCollector
from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.support import health_of, wait_until

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "write a long story about the water people"}]


class Records:
    """What the proxy published, with a way to wait for the next ones."""

    def __init__(self) -> None:
        self.items: list[RequestRecord] = []
        self._lock = threading.Lock()

    def publish(self, records: list) -> None:
        with self._lock:
            self.items.extend(r for r in records if isinstance(r, RequestRecord))

    def wait_for(self, n: int) -> list[RequestRecord]:
        wait_until(lambda: len(self.items) >= n, what=f"{n} request record(s)")
        assert len(self.items) == n, self.items
        return list(self.items)


@pytest.fixture
def proxied(llama_server: LlamaServer) -> Iterator[tuple[openai.OpenAI, openai.OpenAI, Records]]:
    """(direct client, client through the proxy, the proxy's records)."""
    records = Records()
    proxy = ProxyServer(llama_server.base_url, kind="llamacpp", publish=records.publish)
    port = proxy.start()
    direct = openai.OpenAI(base_url=f"{llama_server.base_url}/v1", api_key="unused", max_retries=0)
    through = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    yield direct, through, records
    proxy.stop()


def stream_text(client: openai.OpenAI, max_tokens: int, include_usage: bool = False) -> tuple[str, dict, dict]:
    """The streamed text, the usage (``{}`` when not sent: asked for with ``include_usage``) and
    llama.cpp's timings."""
    text: list[str] = []
    usage: dict[str, object] = {}
    timings: dict[str, object] = {}
    for chunk in client.chat.completions.create(
            model=ALIAS, messages=PROMPT, temperature=0, seed=11, stream=True, max_tokens=max_tokens,
            stream_options={"include_usage": True} if include_usage else openai.omit):
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage.model_dump()
        timings = (chunk.model_extra or {}).get("timings") or timings
    return "".join(text), usage, timings


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_through_the_proxy_is_the_direct_stream_and_is_counted_exactly(
        proxied: tuple, include_usage: bool) -> None:
    direct, through, records = proxied
    expected, _, _ = stream_text(direct, max_tokens=48, include_usage=include_usage)
    got, usage, timings = stream_text(through, max_tokens=48, include_usage=include_usage)

    assert got == expected and got
    assert bool(usage) == include_usage  # the proxy does not add or strip anything by default
    (record,) = records.wait_for(1)
    assert (record.stream, record.status, record.error_type, record.model) == (True, 200, "", ALIAS)
    assert record.finish_reason == "length"
    assert record.tokens_estimated is False
    assert record.completion_tokens == timings["predicted_n"] == 48
    # the whole prompt: the part evaluated now plus the part llama.cpp served from its cache
    assert record.prompt_tokens == timings["prompt_n"] + timings["cache_n"]
    if include_usage:
        assert (record.prompt_tokens, record.completion_tokens) == (
            usage["prompt_tokens"], usage["completion_tokens"])
    assert record.server_tokens_per_s == timings["predicted_per_second"]
    assert record.prompt_tokens_per_s == timings["prompt_per_second"]
    assert 0 < record.ttft_s <= record.latency_s


@pytest.mark.parametrize("max_tokens", [1, 2])
def test_one_and_two_token_streams_keep_their_counts(proxied: tuple, max_tokens: int) -> None:
    """Before, the meter raised on two tokens (one gap) and the record lost its counts."""
    _, through, records = proxied
    _, usage, timings = stream_text(through, max_tokens=max_tokens, include_usage=True)
    (record,) = records.wait_for(1)
    assert record.ok and record.finish_reason == "length" and record.tokens_estimated is False
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.completion_tokens == timings["predicted_n"] == max_tokens
    # the server's own speed, unless it said 0.0 (for one token llama.cpp measures nothing)
    assert record.server_tokens_per_s == (timings["predicted_per_second"] or None)
    assert (record.itl_mean_s is not None) == (max_tokens == 2)
    assert record.client_tokens_per_s is None or record.client_tokens_per_s > 0


def test_non_streaming_through_the_proxy_is_the_direct_answer_and_is_counted_exactly(proxied: tuple) -> None:
    direct, through, records = proxied
    ask = dict(model=ALIAS, messages=PROMPT, max_tokens=40, temperature=0, seed=11)
    expected = direct.chat.completions.create(**ask)
    got = through.chat.completions.create(**ask)

    assert got.choices[0].message.content == expected.choices[0].message.content
    (record,) = records.wait_for(1)
    timings = got.model_extra["timings"]
    assert (record.stream, record.status, record.error_type) == (False, 200, "")
    assert (record.prompt_tokens, record.completion_tokens) == (got.usage.prompt_tokens,
                                                                got.usage.completion_tokens)
    assert record.completion_tokens == timings["predicted_n"]
    assert record.server_tokens_per_s == timings["predicted_per_second"]
    assert record.tokens_estimated is False


def test_eight_concurrent_streams_all_complete_with_exact_counts(proxied: tuple) -> None:
    _, through, records = proxied
    lengths = [20 + i for i in range(8)]  # a distinct length per stream tells the records apart

    def one(max_tokens: int) -> dict:
        text, usage, _ = stream_text(through, max_tokens=max_tokens, include_usage=True)
        assert text
        return usage

    with ThreadPoolExecutor(8) as pool:
        usages = list(pool.map(one, lengths))

    assert [u["completion_tokens"] for u in usages] == lengths
    done = records.wait_for(8)
    assert all(r.ok and r.stream and not r.tokens_estimated for r in done), done
    by_length = {r.completion_tokens: r for r in done}
    assert sorted(by_length) == lengths
    for usage in usages:
        assert by_length[usage["completion_tokens"]].prompt_tokens == usage["prompt_tokens"]


def test_server_killed_mid_stream(tiny_model: Path, tmp_path: Path) -> None:
    """The proxy records an upstream disconnect, the collector flips to down, then up again."""
    server = LlamaServer(tiny_model, tmp_path / "server.log").start()
    records = Records()
    proxy = ProxyServer(server.base_url, kind="llamacpp", publish=records.publish)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy.start()}/v1", api_key="unused",
                           max_retries=0)
    collector = LlamaCppCollector(server.base_url, "llamacpp@killed")
    try:
        assert health_of(collector.poll()).state == HealthState.UP
        stream = client.chat.completions.create(model=ALIAS, messages=PROMPT, max_tokens=3000,
                                                temperature=0, stream=True,
                                                extra_body={"ignore_eos": True})
        chunks = iter(stream)
        next(chunks)  # generation is under way
        server.kill()
        with pytest.raises((openai.APIError, openai.APIConnectionError)):
            for _ in chunks:  # the client sees its stream broken, not a clean end
                pass
        (record,) = records.wait_for(1)
        assert record.error_type == "upstream_disconnect"
        assert not record.ok

        down = health_of(collector.poll())
        assert (down.state, down.source) == (HealthState.DOWN, "llamacpp@killed")

        server.start()
        assert health_of(collector.poll()).state == HealthState.UP
        again = client.chat.completions.create(model=ALIAS, messages=PROMPT, max_tokens=8, temperature=0)
        assert again.usage.completion_tokens == 8  # the same proxy serves the restarted server
        assert records.wait_for(2)[1].ok
    finally:
        collector.close()
        proxy.stop()
        server.stop()
