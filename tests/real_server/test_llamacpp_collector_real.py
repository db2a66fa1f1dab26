"""The llama.cpp collector against a genuine llama-server: what the servers panel and the charts
get is what the server really did."""
from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.records import Event, Health, HealthState, Record, Sample
from collectors.llamacpp import LlamaCppCollector
from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.support import wait_until

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "tell me about the monitor"}]


def values(records: list, name: str) -> list[float]:
    return [r.value for r in records if isinstance(r, Sample) and r.name == name]


def value(records: list, name: str) -> float:
    found = values(records, name)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def health(records: list) -> Health:
    (found,) = [r for r in records if isinstance(r, Health)]
    return found


@pytest.fixture
def collector(llama_server: LlamaServer):
    c = LlamaCppCollector(llama_server.base_url, "llamacpp@test")
    yield c
    c.close()


def test_reports_the_model_its_context_and_its_slots(collector: LlamaCppCollector,
                                                     llama_server: LlamaServer) -> None:
    records = collector.poll()
    h = health(records)
    assert (h.state, h.kind, h.url, h.reason) == (HealthState.UP, "llamacpp", llama_server.base_url, "")
    assert h.version  # llama.cpp's build id, from /props
    assert value(records, "llamacpp_slots_total") == llama_server.slots
    (ctx,) = [r for r in records if isinstance(r, Sample) and r.name == "llamacpp_model_context_length"]
    assert dict(ctx.labels) == {"server": "llamacpp@test", "model": ALIAS}
    assert ctx.value == llama_server.context // llama_server.slots
    assert value(records, "llm_models_loaded") == 1
    assert value(records, "llamacpp_busy_slots") == 0
    assert all(dict(s.labels)["server"] == "llamacpp@test" for s in records if isinstance(s, Sample))


def test_token_counters_rise_by_exactly_the_tokens_generated(llama_server: LlamaServer) -> None:
    ticks = itertools.count(start=100.0, step=2.0)  # two seconds between polls, exactly
    collector = LlamaCppCollector(llama_server.base_url, "llamacpp@test", monotonic=lambda: next(ticks))
    before = collector.poll()
    assert "llamacpp_generation_tokens_per_second" not in {s.name for s in before
                                                           if isinstance(s, Sample)}  # needs two scrapes
    answer = httpx.post(f"{llama_server.base_url}/v1/chat/completions", timeout=30, json={
        "model": ALIAS, "messages": PROMPT, "max_tokens": 40, "temperature": 0}).json()
    after = collector.poll()
    collector.close()

    generated = answer["usage"]["completion_tokens"]
    prompt_evaluated = answer["timings"]["prompt_n"]  # the prompt tokens not served from cache
    assert generated > 0 and prompt_evaluated > 0
    assert (value(after, "llamacpp_generation_tokens_total")
            - value(before, "llamacpp_generation_tokens_total")) == generated
    assert (value(after, "llamacpp_prompt_tokens_total")
            - value(before, "llamacpp_prompt_tokens_total")) == prompt_evaluated
    assert value(after, "llamacpp_generation_tokens_per_second") == generated / 2.0
    assert value(after, "llamacpp_prompt_tokens_per_second") == prompt_evaluated / 2.0
    # one decode call per generated token at least (the prompt is decoded in batches)
    assert value(after, "llamacpp_decode_calls_per_second") * 2.0 >= generated


def test_busy_slots_and_a_live_rate_while_a_long_generation_runs(collector: LlamaCppCollector,
                                                                 llama_server: LlamaServer) -> None:
    client = openai.OpenAI(base_url=f"{llama_server.base_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=ALIAS, messages=PROMPT, max_tokens=3000, temperature=0, stream=True,
        extra_body={"ignore_eos": True})  # thousands of tokens: seconds of work on this model
    with stream:
        next(iter(stream))  # the server has started on it
        first = collector.poll()
        assert value(first, "llamacpp_busy_slots") == 1
        assert value(first, "llamacpp_requests_processing") == 1
        later: list[list[Record]] = []

        def rate_shown() -> bool:
            later.append(collector.poll())
            return value(later[-1], "llamacpp_generation_tokens_per_second") > 0
        wait_until(rate_shown, what="a generation rate")
        # the server's counter has not moved yet (it counts a request when it ends), the rate has
        assert (value(later[-1], "llamacpp_generation_tokens_total")
                == value(first, "llamacpp_generation_tokens_total"))
        assert value(later[-1], "llamacpp_busy_slots") == 1
    # closing the stream cancels the generation: the slot is released, the rate is never negative
    after: list[list[Record]] = []

    def slot_free() -> bool:
        after.append(collector.poll())
        return value(after[-1], "llamacpp_busy_slots") == 0
    wait_until(slot_free, what="the slot to free")
    assert all(value(r, "llamacpp_generation_tokens_per_second") >= 0 for r in after)


def test_flips_down_when_the_server_dies_and_up_when_it_returns(tiny_model: Path, tmp_path: Path) -> None:
    server = LlamaServer(tiny_model, tmp_path / "server.log").start()
    collector = LlamaCppCollector(server.base_url, "llamacpp@restart")
    try:
        assert health(collector.poll()).state == HealthState.UP
        server.kill()
        down = health(collector.poll())
        assert down.state == HealthState.DOWN
        assert "refused" in down.reason
        server.alias = "tiny-b"  # the user restarted it with another model
        server.start()
        records = collector.poll()
        assert health(records).state == HealthState.UP
        assert value(records, "llamacpp_generation_tokens_total") == 0  # a new process
        assert [(e.kind, dict(e.labels)["model"]) for e in records if isinstance(e, Event)] == [
            ("model_loaded", "tiny-b"), ("model_unloaded", ALIAS)]
    finally:
        collector.close()
        server.stop()


def test_api_key_and_a_server_without_metrics_or_slots(tiny_model: Path, tmp_path: Path) -> None:
    server = LlamaServer(tiny_model, tmp_path / "server.log", flags=("--api-key", "sekrit", "--no-slots")).start()
    without_key = LlamaCppCollector(server.base_url, "llamacpp@keyed")
    with_key = LlamaCppCollector(server.base_url, "llamacpp@keyed", api_key="sekrit")
    try:
        refused = health(without_key.poll())
        assert refused.state == HealthState.ERROR
        assert refused.reason == "HTTP 401: Invalid API Key (check the API key)"
        records = with_key.poll()
        h = health(records)
        assert h.state == HealthState.UP
        # up, and the user is told how to get the missing figures
        assert h.reason == ("busy slots need llama-server --slots; "
                            "token counters need llama-server --metrics")
        assert value(records, "llamacpp_slots_total") == server.slots
        names = {r.name for r in records if isinstance(r, Sample)}
        assert not names & {"llamacpp_busy_slots", "llamacpp_generation_tokens_total"}
    finally:
        without_key.close()
        with_key.close()
        server.stop()
