"""The alert engine's state machine, driven by a fake clock over real live buffers and a real
SQLite store: for-duration, cooldown, resolve, flapping, absent data, aggregations, labels."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from app.alerts.engine import AlertEngine, aggregate, replay
from app.alerts.rules import Baseline, Rule, user_rules_path
from app.alerts.transition import Transition
from app.buffers import LiveBuffers
from app.hub import Hub
from app.records import Sample, labels_of
from app.runtime import build_alert_engine
from app.storage.store import Store
from tests.support import query, wait_until
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(db_file: Path, clock: FakeClock):
    store = Store(db_file, clock=clock)
    store.start()
    hub = Hub(store, clock=clock)
    yield hub
    store.close()


def engine_for(hub: Hub, clock: FakeClock, *rules: Rule) -> AlertEngine:
    return AlertEngine(hub.buffers, list(rules), publish=hub.publish, clock=clock)


def feed(hub: Hub, clock: FakeClock, name: str, value: float, **labels: str) -> None:
    hub.publish([Sample(name, float(value), clock.t, labels_of(labels))])


def run(engine: AlertEngine, hub: Hub, clock: FakeClock, name: str, values: Sequence[float], step: float = 1.0,
        **labels: str) -> list[tuple[float, str]]:
    """Feed one value per step and evaluate after each; returns (seconds from start, state)."""
    start = clock.t
    out = []
    for v in values:
        feed(hub, clock, name, v, **labels)
        out += [(clock.t - start, t.event.state) for t in engine.evaluate()]
        clock.t += step
    return out


def stored_events(hub: Hub) -> list[tuple]:
    hub.store.flush()
    return query(hub.store.path, "SELECT rule, state, severity, labels, value FROM alert_events ORDER BY id")


def test_fires_only_after_the_for_duration_then_resolves(hub, clock) -> None:
    rule = Rule("hot", "gpu_temperature_celsius", ">", 85.0, for_s=60, severity="critical",
                message="GPU {gpu} is at {value:.0f} °C")
    engine = engine_for(hub, clock, rule)
    states = run(engine, hub, clock, "gpu_temperature_celsius", [70] * 5 + [90] * 70 + [60] * 3, gpu="0")
    assert states == [(5, "pending"), (65, "firing"), (75, "resolved")]
    assert stored_events(hub) == [("hot", "pending", "critical", '{"gpu":"0"}', 90.0),
                                  ("hot", "firing", "critical", '{"gpu":"0"}', 90.0),
                                  ("hot", "resolved", "critical", '{"gpu":"0"}', 60.0)]
    messages = query(hub.store.path, "SELECT message FROM alert_events WHERE state='firing'")
    assert messages == [("GPU 0 is at 90 °C",)]
    assert engine.alerts() == []


def test_a_dip_before_the_for_duration_restarts_the_wait(hub, clock) -> None:
    engine = engine_for(hub, clock, Rule("cpu", "system_cpu_percent", ">", 80.0, for_s=30))
    states = run(engine, hub, clock, "system_cpu_percent", [90] * 20 + [50] + [90] * 31)
    assert states == [(0, "pending"), (20, "resolved"), (21, "pending"), (51, "firing")]
    assert stored_events(hub)[1][1] == "resolved"
    assert query(hub.store.path, "SELECT message FROM alert_events WHERE id=2") == [
        ("Cleared before firing: CPU use is back to 50.0 %",)]


def test_flapping_fires_at_most_once_per_cooldown(hub, clock) -> None:
    engine = engine_for(hub, clock, Rule("cpu", "system_cpu_percent", ">", 80.0, cooldown=600))
    notified: list[Transition] = []
    engine.add_listener(lambda ts, now: notified.extend(t for t in ts if t.notify))
    # 30 minutes of a value jumping over and under the threshold every 10 s.
    run(engine, hub, clock, "system_cpu_percent", ([95] + [50]) * 90, step=10.0)
    firings = [t.event.ts - notified[0].event.ts for t in notified if t.event.state == "firing"]
    assert firings == [0, 600, 1200]
    assert sum(t.event.state == "resolved" for t in notified) == 3


def test_absent_data_fires_and_recovers(hub, clock) -> None:
    rule = Rule("down", "llmmon_source_up", "<", 1.0, absent_for=60, for_s=0,
                match=(("kind", ("ollama", "vllm")),))
    engine = engine_for(hub, clock, rule)
    run(engine, hub, clock, "llmmon_source_up", [1] * 10, source="ollama@x", kind="ollama")
    run(engine, hub, clock, "llmmon_source_up", [1] * 10, source="gpu", kind="gpu")  # not matched
    fired = []
    for _ in range(120):  # the collector stopped reporting: no samples at all
        fired += [(t.event.state, t.event.message) for t in engine.evaluate()]
        clock.t += 1
    assert fired == [("firing", "Ollama on x:80: no data for 1 min")]
    assert [a.labels for a in engine.alerts()] == [labels_of(source="ollama@x", kind="ollama")]
    states = run(engine, hub, clock, "llmmon_source_up", [1], source="ollama@x", kind="ollama")
    assert states == [(0, "resolved")]


def test_a_series_never_seen_is_absent_under_the_labels_the_rule_pins(hub, clock) -> None:
    rule = Rule("no_gpu0", "gpu_temperature_celsius", absent_for=30, match=(("gpu", ("0",)),))
    unpinned = Rule("no_any", "gpu_temperature_celsius", absent_for=30, match=(("gpu", ("*",)),))
    engine = engine_for(hub, clock, rule, unpinned)
    assert engine.evaluate() == []
    clock.t += 29
    assert engine.evaluate() == []  # not absent "for 30 s" yet: the engine just started
    clock.t += 1
    [t] = engine.evaluate()
    assert (t.event.rule, t.event.state, t.event.labels) == ("no_gpu0", "firing", (("gpu", "0"),))


def test_one_alert_per_matching_series(hub, clock) -> None:
    rule = Rule("queue", "vllm_requests_waiting", ">", 10.0, match=(("server", ("vllm@*",)),))
    engine = engine_for(hub, clock, rule)
    feed(hub, clock, "vllm_requests_waiting", 20, server="vllm@a:8000", model="m1")
    feed(hub, clock, "vllm_requests_waiting", 30, server="vllm@b:8000", model="m2")
    feed(hub, clock, "vllm_requests_waiting", 2, server="vllm@c:8000", model="m3")
    feed(hub, clock, "vllm_requests_waiting", 99, server="other@d", model="m4")
    fired = {dict(t.event.labels)["server"] for t in engine.evaluate()}
    assert fired == {"vllm@a:8000", "vllm@b:8000"}
    assert len(stored_events(hub)) == 2


def test_rate_is_per_second_and_survives_a_counter_reset(hub, clock) -> None:
    rule = Rule("tokens", "llamacpp_generation_tokens_total", ">", 40.0, aggregation="rate", window=60)
    engine = engine_for(hub, clock, rule)
    # 30 tokens/s for a minute: no alert; then the server restarts (counter reset) and runs at 50/s.
    values = [30.0 * i for i in range(60)] + [50.0 * i for i in range(1, 121)]
    fired = [t for t, s in run(engine, hub, clock, "llamacpp_generation_tokens_total", values, server="s")]
    assert fired and 60 + 20 <= fired[0] <= 60 + 60  # only once the window holds mostly 50/s
    assert aggregate("rate", np.array([0.0, 10.0, 20.0]), np.array([100.0, 150.0, 30.0])) == 4.0


def test_percentile_over_the_window(hub, clock) -> None:
    rule = Rule("ttft", "llm_request_ttft_seconds", ">", 5.0, aggregation="p95", window=100)
    engine = engine_for(hub, clock, rule)
    # 100 requests: 90 fast, 10 slow → p95 is slow, the average is not.
    run(engine, hub, clock, "llm_request_ttft_seconds", [0.5] * 90, server="s")
    assert engine.alerts() == []
    states = run(engine, hub, clock, "llm_request_ttft_seconds", [8.0] * 10, server="s")
    assert states[0][1] == "firing"
    assert engine.alerts()[0].value == pytest.approx(8.0)
    avg = AlertEngine(hub.buffers, [Rule("a", "llm_request_ttft_seconds", ">", 5.0, aggregation="avg", window=100)])
    assert avg.evaluate(clock.t) == []


def test_baseline_compares_a_model_with_its_own_last_hour(hub, clock) -> None:
    rule = Rule("drop", "llm_request_tokens_per_second", "<", 0.5, aggregation="avg", window=300,
                baseline=Baseline("median", 3600, 10), message="{model} at {value:.0%} of usual")
    engine = engine_for(hub, clock, rule)
    # One fast and one slow model, each steady for 50 minutes: neither "dropped".
    for _ in range(50):
        feed(hub, clock, "llm_request_tokens_per_second", 80, server="s", model="fast")
        feed(hub, clock, "llm_request_tokens_per_second", 20, server="s", model="slow")
        assert engine.evaluate() == []
        clock.t += 60
    # The fast one halves... then drops to a quarter; the slow one stays as it is.
    states = []
    for speed in [40] * 5 + [20] * 5:
        feed(hub, clock, "llm_request_tokens_per_second", speed, server="s", model="fast")
        feed(hub, clock, "llm_request_tokens_per_second", 20, server="s", model="slow")
        states += [(t.event.labels, t.event.message) for t in engine.evaluate()]
        clock.t += 60
    assert states == [(labels_of(server="s", model="fast"), "fast at 46% of usual")]  # (5×40 + 20) / 6 vs 80


def test_between_means_strictly_inside(hub, clock) -> None:
    engine = engine_for(hub, clock, Rule("offload", "ollama_model_gpu_share_ratio", "between", (0.0, 1.0)))
    for model, share in (("gpu_only", 1.0), ("cpu_only", 0.0), ("split", 0.62)):
        feed(hub, clock, "ollama_model_gpu_share_ratio", share, server="o", model=model)
    assert [dict(t.event.labels)["model"] for t in engine.evaluate()] == ["split"]


def test_acknowledge_and_snooze(hub, clock) -> None:
    hot = Rule("hot", "gpu_temperature_celsius", ">", 85.0, severity="critical", cooldown=0)
    vram = Rule("vram", "gpu_memory_percent", ">", 95.0, severity="warning", cooldown=0)
    engine = engine_for(hub, clock, hot, vram)
    notified: list[tuple[str, str]] = []
    engine.add_listener(lambda ts, now: notified.extend((t.event.rule, t.event.state) for t in ts if t.notify))
    feed(hub, clock, "gpu_temperature_celsius", 90, gpu="0")
    feed(hub, clock, "gpu_memory_percent", 99, gpu="0")
    engine.evaluate()
    assert engine.worst_firing() == ("critical", 2)
    assert engine.acknowledge("hot", labels_of(gpu="0"))
    assert engine.worst_firing() == ("warning", 1)
    assert engine.alerts()[0].acknowledged or engine.alerts()[1].acknowledged
    assert engine.snooze("vram", labels_of(gpu="0"), 3600)
    assert not engine.acknowledge("vram", labels_of(gpu="1"))  # no such alert
    clock.t += 10
    feed(hub, clock, "gpu_temperature_celsius", 60, gpu="0")
    feed(hub, clock, "gpu_memory_percent", 50, gpu="0")
    engine.evaluate()
    clock.t += 10
    feed(hub, clock, "gpu_temperature_celsius", 90, gpu="0")
    feed(hub, clock, "gpu_memory_percent", 99, gpu="0")
    engine.evaluate()
    # The snoozed alert moved silently; the acknowledged one was told when it resolved and re-fired.
    assert notified == [("hot", "firing"), ("vram", "firing"), ("hot", "resolved"), ("hot", "firing")]
    assert [a.acknowledged for a in engine.alerts() if a.rule == "hot"] == [False]
    states = [(r[0], r[1]) for r in stored_events(hub)]
    assert ("hot", "acknowledged") in states and ("vram", "snoozed") in states
    assert states.count(("vram", "firing")) == 2


def test_changing_or_disabling_a_rule_resolves_its_alerts(hub, clock) -> None:
    rule = Rule("hot", "gpu_temperature_celsius", ">", 85.0)
    engine = engine_for(hub, clock, rule)
    feed(hub, clock, "gpu_temperature_celsius", 90, gpu="0")
    assert engine.evaluate()[0].event.state == "firing"
    engine.set_rules([Rule("hot", "gpu_temperature_celsius", ">", 85.0, enabled=False)])
    assert engine.alerts() == []
    assert stored_events(hub)[-1][1] == "resolved"
    assert engine.evaluate() == []


def test_replay_counts_what_a_rule_would_have_done(clock) -> None:
    buffers = LiveBuffers()
    start = clock.t - 3600
    # An hour of CPU at 1 Hz with three 2-minute bursts over 90 %.
    bursts = [(600, 720), (1800, 1920), (3000, 3120)]
    buffers.add(Sample("system_cpu_percent", 95.0 if any(a <= i < b for a, b in bursts) else 20.0, start + i)
                for i in range(3600))
    rule = Rule("cpu", "system_cpu_percent", ">", 80.0, for_s=60, cooldown=0)
    result = replay(rule, buffers, start, clock.t)
    assert result.fired == 3 and result.series == 1
    assert result.summary() == "Would have fired 3 times in the last 1h (1 series checked)."
    assert replay(Rule("cpu", "system_cpu_percent", ">", 80.0, for_s=180), buffers, start, clock.t).fired == 0
    assert replay(Rule("cpu", "system_cpu_percent", ">", 80.0, cooldown=3600), buffers, start, clock.t).fired == 1


def test_an_absurd_duration_is_a_rule_error_on_its_line_and_the_other_rules_fire(hub, clock) -> None:
    huge = "9" * 309
    user_rules_path().parent.mkdir(parents=True, exist_ok=True)
    user_rules_path().write_text(
        '[[rule]]\nname = "wide"\nmetric = "gpu_temperature_celsius"\naggregation = "avg"\n'
        f'window = {huge}\nthreshold = 1\n\n'
        f'[[rule]]\nname = "patient"\nmetric = "gpu_temperature_celsius"\nthreshold = 1\nfor = "{huge}d"\n\n'
        '[[rule]]\nname = "hot"\nmetric = "gpu_temperature_celsius"\nthreshold = 85\n', encoding="utf-8")
    engine = build_alert_engine(hub)  # what the app does at start-up with the user's file
    assert [p.partition(", not")[0] for p in engine.problems] == [
        "alert_rules.toml line 5: rule 'wide': window: a duration must be from 0s to 366d",
        "alert_rules.toml line 12: rule 'patient': for: a duration must be from 0s to 366d"]
    feed(hub, clock, "gpu_temperature_celsius", 90, gpu="0")
    assert [(t.event.rule, t.event.state) for t in engine.evaluate()] == [("hot", "firing")]
    assert stored_events(hub) == [("hot", "firing", "warning", '{"gpu":"0"}', 90.0)]


class TornSource:
    """The live buffers, except that reading one metric fails while ``torn`` (a bug in a
    buffer, a series whose arrays went bad): what one broken rule looks like to the engine."""

    def __init__(self, buffers: LiveBuffers, metric: str) -> None:
        self.buffers = buffers
        self.metric = metric
        self.torn = True

    def keys(self, name: str | None = None):
        return self.buffers.keys(name)

    def window(self, key, since=None):
        if self.torn and key[0] == self.metric:
            raise RuntimeError("torn buffer")
        return self.buffers.window(key, since)


def test_a_rule_that_fails_is_shown_logged_once_and_the_others_keep_firing(hub, clock, caplog) -> None:
    source = TornSource(hub.buffers, "system_cpu_percent")
    engine = AlertEngine(source, [Rule("cpu", "system_cpu_percent", ">", 90.0, line=7),
                                  Rule("hot", "gpu_temperature_celsius", ">", 85.0)],
                         publish=hub.publish, clock=clock, interval=0.001)
    ticks = []
    engine.add_listener(lambda transitions, now: ticks.append(transitions))
    feed(hub, clock, "system_cpu_percent", 99)
    feed(hub, clock, "gpu_temperature_celsius", 90, gpu="0")
    engine.start()  # its own thread, ticking every millisecond on the fake clock
    try:
        wait_until(lambda: len(ticks) >= 5, what="five evaluations")
        assert engine._thread is not None and engine._thread.is_alive()
        assert [(t.event.rule, t.event.state) for t in ticks[0]] == [("hot", "firing")]
        assert engine.problems == ["rule 'cpu' (line 7) cannot be evaluated: RuntimeError: torn buffer; "
                                   "the other rules go on"]
        logged = [r for r in caplog.records if "rule 'cpu'" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback
        source.torn = False
        wait_until(lambda: engine.problems == [], what="the rule evaluating again")
        wait_until(lambda: ("cpu", "firing") in [(r[0], r[1]) for r in stored_events(hub)], what="cpu firing")
    finally:
        engine.stop()


def test_messages_name_a_server_by_its_display_name(hub, clock) -> None:
    """The alert is about the server's series (its identity, stored); the notification text says
    what the user called it, so a renamed server's alerts use the new name."""
    identity = "llamacpp@127.0.0.1:8080"
    rule = Rule("errors", "llm_error_ratio", ">", 0.1, for_s=0, message="{value:.0%} of requests to {server} fail")
    engine = engine_for(hub, clock, rule)
    engine.names = lambda s: "gemma-local" if s == identity else s   # as Runtime.display_name for a named one
    run(engine, hub, clock, "llm_error_ratio", [0.5], server=identity)
    assert stored_events(hub)[-1][3] == f'{{"server":"{identity}"}}'
    assert query(hub.store.path, "SELECT message FROM alert_events WHERE state='firing'") == [
        ("50% of requests to gemma-local fail",)]
