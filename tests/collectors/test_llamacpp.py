"""The llama.cpp collector against payloads recorded from another llama-server build (a
gemma-3-270m model, see tests/sim/recordings/README.md), served over real HTTP by a plain
static file server, and against the broken answers a user can meet: HTML error pages,
truncated JSON, a server that never answers."""
from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from app.records import Event, Health, HealthState, Sample
from collectors.llamacpp import LlamaCppCollector
from tests.support.llamaserver_site import RECORDED


def by_name(records: list) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for r in records:
        if isinstance(r, Sample):
            out.setdefault(r.name, []).append(r)
    return out


def health(records: list) -> Health:
    found = [r for r in records if isinstance(r, Health)]
    assert len(found) == 1, found
    return found[0]


def test_recorded_server_gives_model_slots_counters_and_rates(site: tuple[Path, str]) -> None:
    root, url = site
    ticks = itertools.count(start=0.0, step=4.0)
    collector = LlamaCppCollector(url, "llamacpp@rec", monotonic=lambda: next(ticks))
    first = collector.poll()
    (root / "metrics_after").replace(root / "metrics")  # the same server after two requests
    second = collector.poll()
    collector.close()

    assert health(first).state == HealthState.UP
    assert health(first).version == "b0-unknown"
    samples = by_name(first)
    assert samples["llamacpp_slots_total"][0].value == 2
    assert samples["llamacpp_busy_slots"][0].value == 0
    (ctx,) = samples["llamacpp_model_context_length"]
    assert (dict(ctx.labels)["model"], ctx.value) == ("gemma-3-270m", 1024)
    assert not [e for e in first if isinstance(e, Event)]  # the model was already there

    later = by_name(second)
    assert later["llamacpp_prompt_tokens_total"][0].value == 57   # as recorded
    assert later["llamacpp_generation_tokens_total"][0].value == 80
    assert later["llamacpp_generation_tokens_per_second"][0].value == 80 / 4.0
    assert later["llamacpp_prompt_tokens_per_second"][0].value == 57 / 4.0
    assert later["llamacpp_decode_calls_per_second"][0].value == 83 / 4.0
    assert later["llamacpp_requests_processing"][0].value == 0
    assert later["llamacpp_requests_deferred"][0].value == 0


def test_counters_that_go_down_mean_a_restart_not_a_negative_rate(site: tuple[Path, str]) -> None:
    root, url = site
    ticks = itertools.count(start=0.0, step=1.0)
    collector = LlamaCppCollector(url, "llamacpp@rec", monotonic=lambda: next(ticks))
    (root / "metrics").write_bytes((root / "metrics_after").read_bytes())
    collector.poll()
    (root / "metrics").write_bytes((RECORDED / "metrics").read_bytes())  # restarted: all zero
    rates = by_name(collector.poll())
    collector.close()
    assert rates["llamacpp_generation_tokens_per_second"][0].value == 0.0
    assert rates["llamacpp_prompt_tokens_per_second"][0].value == 0.0


@pytest.mark.parametrize("broken, expected", [
    ("props", "HTTP 404: HTML error page"),  # not a llama-server: the file server's 404 page
    ("truncated", "not a llama.cpp server (/props: truncated JSON"),
    ("slots", "HTTP 404: HTML error page"),
])
def test_broken_answers_give_an_error_state_with_the_reason(site: tuple[Path, str], broken: str,
                                                            expected: str) -> None:
    root, url = site
    if broken == "truncated":
        text = (root / "props").read_text()
        (root / "props").write_text(text[: len(text) // 2])
    else:
        (root / broken).unlink()
    collector = LlamaCppCollector(url, "llamacpp@rec")
    h = health(collector.poll())
    collector.close()
    assert h.state == HealthState.ERROR
    assert h.reason.startswith(expected)


def test_a_server_that_never_answers_is_down_after_the_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        collector = LlamaCppCollector(url, "llamacpp@hung", timeout=0.2)
        h = health(collector.poll())
        collector.close()
    assert h.state == HealthState.DOWN
    assert h.reason == "timed out after 0.2 s"


def test_nothing_listening_is_down_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    collector = LlamaCppCollector(f"http://127.0.0.1:{port}", "llamacpp@gone")
    h = health(collector.poll())
    collector.close()
    assert (h.state, h.kind, h.url) == (HealthState.DOWN, "llamacpp", f"http://127.0.0.1:{port}")
    assert "refused" in h.reason


def test_a_server_still_loading_its_model_is_up_and_says_so(site: tuple[Path, str]) -> None:
    root, url = site
    (root / "health_loading").replace(root / "health")  # llama-server until its model is in
    (root / "health.status").write_text("503")
    collector = LlamaCppCollector(url, "llamacpp@loading")
    records = collector.poll()
    collector.close()
    assert (health(records).state, health(records).reason) == (HealthState.UP, "loading model")
    assert not by_name(records).keys() - {"llm_poll_latency_seconds"}
