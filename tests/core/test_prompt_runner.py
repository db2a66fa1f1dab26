"""The prompt test's runner (no window): short answers keep their figures, and a failing
receiver of the text or of the result costs nothing else."""
from __future__ import annotations

import threading

import pytest

from app.prompt_runner import PromptRequest, PromptRun, PromptTarget
from app.records import RequestRecord
from tests.sim.upstream import SimUpstream
from tests.support.proxy import json_chunks


@pytest.fixture
def upstream():
    with SimUpstream() as up:
        up.routes["/v1/chat/completions"] = ("llamaserver_stream_2_tokens.sse", "llamaserver_chat.json", False)
        up.chunk_delay_s = 0.01
        yield up


def run(upstream: SimUpstream, on_text=None, publish=None) -> tuple[PromptRun, list[RequestRecord]]:
    done: list[RequestRecord] = []
    finished = threading.Event()

    def on_done(rec: RequestRecord) -> None:
        done.append(rec)
        finished.set()

    prompt = PromptRun(PromptTarget("llamacpp@sim", upstream.url, "llamacpp", "tiny"),
                       PromptRequest("write a long story", max_tokens=2), publish, on_text=on_text, on_done=on_done)
    prompt.start()
    assert finished.wait(30)
    prompt.join(10)
    return prompt, done


def test_a_two_token_answer_keeps_the_servers_counts_and_speeds(upstream: SimUpstream) -> None:
    """Before, the meter raised on a 2-token answer: the run ended with no counts, no speeds."""
    final = json_chunks("llamaserver_stream_2_tokens.sse")[-1]
    published: list = []
    pieces: list[str] = []
    _, (rec,) = run(upstream, pieces.append, published.extend)
    assert b'"max_tokens":2' in upstream.requests[-1].body.replace(b" ", b"")
    assert published == [rec] and rec.ok and rec.finish_reason == "length"
    assert (rec.completion_tokens, rec.prompt_tokens, rec.tokens_estimated) == (
        final["usage"]["completion_tokens"], final["usage"]["prompt_tokens"], False) == (2, 64, False)
    assert rec.server_tokens_per_s == final["timings"]["predicted_per_second"]
    assert rec.client_tokens_per_s == pytest.approx(1 / rec.itl_mean_s)
    assert "".join(pieces) == rec.response_text and len(pieces) == 2


def test_failing_receivers_do_not_lose_the_run(upstream: SimUpstream) -> None:
    def broken_text(_text: str) -> None:
        raise RuntimeError("the panel is gone")

    def broken_publish(_records: list) -> None:
        raise RuntimeError("the hub is gone")

    prompt, (rec,) = run(upstream, broken_text, broken_publish)
    assert rec is prompt.record and rec.ok  # on_done still got it, with every figure
    assert (rec.completion_tokens, rec.tokens_estimated) == (2, False) and rec.server_tokens_per_s > 0
