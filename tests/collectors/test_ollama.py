"""The Ollama collector against a simulated Ollama (real HTTP on 127.0.0.1) replaying the
payloads of Ollama's API docs, and against the broken answers a user can meet."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.hub import Hub
from app.records import Event, Health, HealthState, Sample
from collectors.ollama import OllamaCollector
from tests.sim.ollama import SimOllama, recording
from tests.sim.server import GARBAGE, HANG, HTML_ERROR, HTML_PAGE, Reply, truncated
from tests.support import wait_until


@pytest.fixture
def ollama() -> Iterator[SimOllama]:
    with SimOllama() as sim:
        yield sim


def samples(records: list, name: str) -> dict[str, float]:
    """``model (or server) → value`` of one metric."""
    out = {}
    for r in records:
        if isinstance(r, Sample) and r.name == name:
            labels = dict(r.labels)
            out[labels.get("model", labels["server"])] = r.value
    return out


def health(records: list) -> Health:
    found = [r for r in records if isinstance(r, Health)]
    assert len(found) == 1
    return found[0]


def test_loaded_models_with_vram_share_and_version(ollama: SimOllama) -> None:
    collector = OllamaCollector(ollama.url)
    records = collector.poll()
    documented = recording("ps.json")["models"][0]
    assert samples(records, "ollama_model_size_bytes") == {"mistral:latest": documented["size"]}
    assert samples(records, "ollama_model_gpu_share_ratio") == {"mistral:latest": 1.0}
    assert samples(records, "llm_models_loaded") == {collector.name: 1}
    assert samples(records, "llm_models_installed") == {collector.name: len(recording("tags.json")["models"])}
    assert "ollama_model_context_length" not in {r.name for r in records if isinstance(r, Sample)}  # older shape
    state = health(records)
    assert state.state == HealthState.UP and state.version == recording("version.json")["version"]
    assert state.kind == "ollama" and collector.name == f"ollama@127.0.0.1:{ollama.port}"
    # models already loaded are no news; each installed model's digest is recorded once
    assert {(e.kind, dict(e.labels)["model"], dict(e.labels)["digest"]) for e in records if isinstance(e, Event)} == \
        {("model_digest", m["name"], m["digest"]) for m in recording("tags.json")["models"]}


def test_model_load_and_unload_give_events_and_partial_offload_is_visible(ollama: SimOllama) -> None:
    collector = OllamaCollector(ollama.url)
    collector.poll()
    gemma = SimOllama.partially_offloaded_model()
    ollama.load(gemma)
    records = collector.poll()
    events = [r for r in records if isinstance(r, Event)]
    assert [(e.kind, dict(e.labels)["model"]) for e in events] == [("model_loaded", "gemma4")]
    assert "81% on GPU" in events[0].message
    share = samples(records, "ollama_model_gpu_share_ratio")["gemma4"]
    assert share == pytest.approx(gemma["size_vram"] / gemma["size"])
    assert samples(records, "ollama_model_context_length") == {"gemma4": gemma["context_length"]}
    assert samples(records, "llm_models_loaded") == {collector.name: 2}

    ollama.unload("mistral:latest")
    records = collector.poll()
    assert [(e.kind, dict(e.labels)["model"]) for e in records if isinstance(e, Event)] == \
        [("model_unloaded", "mistral:latest")]
    assert set(samples(records, "llm_model_loaded")) == {"gemma4"}


def test_time_to_expiry_counts_down_from_the_documented_timestamp(ollama: SimOllama) -> None:
    gemma = SimOllama.partially_offloaded_model()
    ollama.unload("mistral:latest")
    ollama.load(gemma)
    # expires_at is 2025-10-17T16:47:07.93355-07:00 = 1760744827.93355 UTC; poll 100 s before it
    collector = OllamaCollector(ollama.url, clock=lambda: 1760744827.93355 - 100)
    assert samples(collector.poll(), "ollama_model_expires_in_seconds")["gemma4"] == pytest.approx(100)


@pytest.mark.parametrize("fault, reason", [
    (HTML_ERROR, "HTTP 502: HTML error page"),
    (HTML_PAGE, "not an Ollama server (HTML page at /api/ps)"),
    (GARBAGE, "not an Ollama server (/api/ps: not JSON"),
    (Reply(200, b'{"models": [{"name": "mistral:lat'), "not an Ollama server (/api/ps: truncated JSON"),
    (truncated(Reply.json(recording("ps.json"))), "connection dropped by the server mid-answer (/api/ps)"),
    (Reply.json({"error": "something went wrong"}, 500), "HTTP 500: something went wrong"),
    (Reply.json({"models": "none"}), "not an Ollama server (/api/ps has no 'models' list)"),
])
def test_broken_answers_give_a_clear_error_not_an_exception(ollama: SimOllama, fault: Reply, reason: str) -> None:
    collector = OllamaCollector(ollama.url)
    ollama.set_fault(fault)
    state = health(collector.poll())
    assert state.state in (HealthState.ERROR, HealthState.DOWN)
    assert state.reason.startswith(reason), state.reason


def test_hanging_server_times_out(ollama: SimOllama) -> None:
    ollama.set_fault(HANG)  # accepts the connection, then says nothing for 30 s
    state = health(OllamaCollector(ollama.url, timeout=0.5).poll())
    assert (state.state, state.reason) == (HealthState.DOWN, "timed out after 0.5 s")


def test_down_server_flips_to_down_with_reason_and_recovers(ollama: SimOllama) -> None:
    collector = OllamaCollector(ollama.url, interval=0.1)
    collector.max_backoff = 0.4
    hub = Hub(store=None)
    seen: list[Health] = []
    hub.subscribe(lambda rs: seen.extend(r for r in rs if isinstance(r, Health)))
    hub.add_collectors([collector])
    hub.start()
    try:
        wait_until(lambda: hub.health.get(collector.name) and hub.health[collector.name].state == HealthState.UP,
                   what="the first poll")
        ollama.go_down()
        # (a poll caught mid-answer says "connection dropped"; the next one "refused")
        refused = f"connection refused on :{ollama.port}"
        wait_until(lambda: hub.health[collector.name].reason == refused, what="down, refused")
        assert hub.health[collector.name].state == HealthState.DOWN
        ollama.come_back()
        wait_until(lambda: hub.health[collector.name].state == HealthState.UP, what="recovery")
    finally:
        assert hub.stop() == []
    states = [h.state for h in seen]
    first_down = states.index(HealthState.DOWN)
    assert HealthState.UP in states[first_down:]  # it came back; no thread died on the way
