"""Notifications are plain sentences: every shipped rule, fed with series that real collectors
read from simulated servers replaying recorded payloads (llama.cpp, vLLM, Ollama) and from this
machine (system), fires through the real engine into the real notifier; what the user reads is
the rule's title, a sentence (no ``{``, ``}``, metric name or ``kind@host:port``) and the hint."""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from app.alerts.engine import AlertEngine
from app.alerts.notify import Notification, Notifier
from app.alerts.rules import DEFAULT_RULES_PATH, NotifySettings, Rule, load_rules
from app.buffers import LiveBuffers
from app.records import Labels, Sample, labels_of
from collectors.llamacpp import LlamaCppCollector
from collectors.ollama import OllamaCollector
from collectors.system import SystemCollector
from collectors.vllm import VllmCollector
from tests.sim.llamacpp import SimLlamaServer
from tests.sim.ollama import SimOllama
from tests.sim.vllm import SimVllm
from tests.support.clock import FakeClock

RAW_SERVER = re.compile(r"\b\w+@[\w.\-]+:\d+")
METRIC_LIKE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")    # gpu_temperature_celsius, busy_slots
SHIPPED = load_rules(DEFAULT_RULES_PATH).rules


@pytest.fixture(scope="module")
def recorded() -> Iterator[list[Sample]]:
    """What the real collectors read: two polls of each simulated server (the second after a
    batch of requests, so rates and windows have values) and one of this machine."""
    llama, vllm = SimLlamaServer(), SimVllm()
    sims = [llama, vllm, SimOllama(loaded=[SimOllama.partially_offloaded_model()])]
    for sim in sims:
        sim.start()
    try:
        collectors = [LlamaCppCollector(sims[0].url), VllmCollector(sims[1].url), OllamaCollector(sims[2].url)]
        samples = []
        for step, now in enumerate((1_000.0, 1_010.0)):
            if step:
                llama.advance()
                vllm.step = 1
            for collector in collectors:
                samples += [r for r in collector.read(now) if isinstance(r, Sample)]
        samples += [r for r in SystemCollector(clock=lambda: 1_010.0).poll() if isinstance(r, Sample)]
        yield samples
    finally:
        for sim in sims:
            sim.stop()


def server_of(samples: list[Sample], kind: str) -> str:
    return next(dict(s.labels)["server"] for s in samples if dict(s.labels).get("server", "").startswith(kind + "@"))


def series_for(rule: Rule, samples: list[Sample]) -> tuple[Labels, float | None]:
    """A recorded series the rule selects, with its recorded value; for the series no simulated
    server gives (GPU, the proxy's request figures, llmmon's own up/down), labels in the shape
    docs/metrics.md gives them, naming a recorded server."""
    recorded = [s for s in samples if s.name == rule.metric and rule.matches(s.labels)]
    if recorded:
        return recorded[-1].labels, recorded[-1].value
    llama = server_of(samples, "llamacpp")
    made = {"gpu": labels_of(gpu="0"), "llmmon": labels_of(source=llama, kind="llamacpp"),
            "llm": labels_of(dict(rule.exact_labels()), server=llama, model="gemma-3-270m")}
    return made[rule.metric.split("_")[0]], None


def crossing(rule: Rule, recorded: float | None) -> float:
    """The recorded value when it meets the rule's condition, else one that does."""
    if isinstance(rule.threshold, tuple):
        low, high = rule.threshold
        return recorded if recorded is not None and low < recorded < high else (low + high) / 2
    assert rule.threshold is not None
    t = rule.threshold
    if rule.op in ("<", "<="):
        return recorded if recorded is not None and recorded < t else t / 2
    if recorded is not None and recorded > t:
        return recorded
    top = 100.0 if rule.metric.endswith("_percent") else 1.0 if rule.metric.endswith("_ratio") else t * 2 + 2
    return (t + top) / 2


def fire(rule: Rule, labels: Labels, value: float, clock: FakeClock, normal: float | None = None
         ) -> tuple[AlertEngine, Notifier, LiveBuffers]:
    """Feed ``value`` every 5 s until the rule notifies (an hour of ``normal`` first, for a rule
    that compares with its own history)."""
    buffers = LiveBuffers()
    engine = AlertEngine(buffers, [rule], clock=clock)
    notifier = Notifier([], NotifySettings(group_seconds=0), clock=clock)
    engine.add_listener(notifier.submit)
    if normal is not None:
        buffers.add([Sample(rule.metric, normal, clock.t - 3600 + 60 * i, labels) for i in range(60)])
    for _ in range(200):
        buffers.add([Sample(rule.metric, value, clock.t, labels)])
        engine.evaluate()
        if notifier.sent:
            break
        clock.advance(5)
    return engine, notifier, buffers


def assert_plain(text: str, rule: Rule) -> None:
    assert "{" not in text and "}" not in text, text
    assert rule.metric not in text and not METRIC_LIKE.search(text), text
    assert not RAW_SERVER.search(text), text
    assert "None" not in text and "nan" not in text and "?" not in text, text


@pytest.mark.parametrize("rule", SHIPPED, ids=[r.name for r in SHIPPED])
def test_every_shipped_rule_notifies_in_a_plain_sentence_with_its_hint(rule: Rule, recorded: list[Sample]) -> None:
    labels, value = series_for(rule, recorded)
    clock = FakeClock()
    normal = None
    if rule.baseline is not None:  # a model at 30 % of its usual speed
        normal = value or 40.0
        value = normal * 0.3
    _engine, notifier, _buffers = fire(rule, labels, crossing(rule, value), clock, normal)
    assert len(notifier.sent) == 1, f"{rule.name} did not fire"
    note: Notification = notifier.sent[0]
    assert note.title == f"{rule.severity.upper()}: {rule.title}"
    sentence, hint = note.body.split("\n")
    assert hint == rule.hint and hint.endswith(".")
    assert_plain(sentence, rule)
    server = dict(labels).get("server") or dict(labels).get("source")
    if server:  # the server as a person says it
        assert re.search(r"\b(llama\.cpp|vLLM|Ollama) on :\d+\b", sentence), sentence
        assert server.rsplit(":", 1)[1] in sentence
    if rule.for_s:  # how long it has held
        assert re.search(r"for \d+ (s|min)\b", sentence), sentence


def test_a_rule_without_a_template_gets_a_generated_sentence(recorded: list[Sample]) -> None:
    # The rule a user wrote for the real llama.cpp server: the busy slots, all of them.
    rule = Rule("llama_busy", "llamacpp_busy_slots", ">", 0.0, for_s=30, title="llama.cpp busy")
    labels, _ = series_for(rule, recorded)
    slots = next(s.value for s in recorded if s.name == "llamacpp_slots_total")
    clock = FakeClock()
    engine, notifier, buffers = fire(rule, labels, slots, clock)
    port = dict(labels)["server"].rsplit(":", 1)[1]
    assert notifier.sent[0].title == "WARNING: llama.cpp busy"
    assert notifier.sent[0].body == f"llama.cpp on :{port}: busy slots is {slots:.0f}, above 0 for 30 s"
    clock.advance(5)
    buffers.add([Sample(rule.metric, 0.0, clock.t, labels)])
    engine.evaluate()
    assert [(n.title, n.body) for n in list(notifier.sent)[1:]] == [
        ("Resolved: llama.cpp busy", f"llama.cpp on :{port}: busy slots is back to 0")]


def test_generated_sentences_carry_units_and_the_time_held(recorded: list[Sample]) -> None:
    cases = [
        (Rule("hot", "gpu_temperature_celsius", ">", 85.0, for_s=120), labels_of(gpu="0"), 91.0,
         "GPU 0 temperature is 91 °C, above 85 °C for 2 min"),
        (Rule("vram", "gpu_memory_used_bytes", ">", 20 * 2 ** 30, for_s=60), labels_of(gpu="1"), 22.5 * 2 ** 30,
         "GPU 1 memory used is 22.50 GiB, above 20.00 GiB for 1 min"),
        (Rule("kv", "vllm_kv_cache_usage_ratio", ">=", 0.9), *series_for(
            Rule("kv", "vllm_kv_cache_usage_ratio", ">=", 0.9), recorded)[:1], 0.97, None),
    ]
    for rule, labels, value, expected in cases:
        clock = FakeClock()
        _engine, notifier, _buffers = fire(rule, labels, value, clock)
        body = notifier.sent[0].body
        if expected is not None:
            assert body == expected
        else:  # vLLM's own labels: the model and the server as people say them
            port = dict(labels)["server"].rsplit(":", 1)[1]
            assert body == f"vLLM on :{port}: tiny-llama KV cache use is 97.0 %, at or above 90 %"


def test_a_template_naming_a_label_the_series_lacks_falls_back_to_the_generated_sentence() -> None:
    rule = replace(Rule("hot", "gpu_temperature_celsius", ">", 85.0), message="{server} GPU {gpu} is hot")
    _engine, notifier, _buffers = fire(rule, labels_of(gpu="0"), 90.0, FakeClock())
    assert notifier.sent[0].body == "GPU 0 temperature is 90 °C, above 85 °C"
