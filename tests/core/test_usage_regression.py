"""The speed regression alert: a model whose median tokens/s today is below 80 % of its median
over the 7 days before fires the shipped rule ``model_slower_than_last_week``; a steady model,
or one with too few requests to tell, does not."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from app.alerts.engine import AlertEngine
from app.alerts.rules import DEFAULT_RULES_PATH, load_rules
from app.hub import Hub
from app.records import RequestRecord
from app.storage.store import Store
from app.usage.regression import METRIC, MIN_TODAY
from app.usage.service import UsageService


def requests(model: str, day: datetime, speeds: list[float]) -> list[RequestRecord]:
    return [RequestRecord(ts_start=(day + timedelta(minutes=5 * i)).timestamp(), server="ollama@x",
                          endpoint="/api/chat", model=model, status=200, latency_s=1.0, server_tokens_per_s=s)
            for i, s in enumerate(speeds)]


def test_a_model_slower_than_its_last_week_fires_the_shipped_rule(tmp_path: Path) -> None:
    today = datetime.combine(datetime.now().date(), datetime.min.time())
    now = (today + timedelta(hours=12)).timestamp()
    store = Store(tmp_path / "regression.db", clock=lambda: now)
    store.start()
    rng = np.random.default_rng(3)
    for back in range(1, 8):   # the week before: both models around 100 tokens/s
        day = today - timedelta(days=back) + timedelta(hours=9)
        for model in ("slowed", "steady", "rare"):
            store.put(requests(model, day, list(rng.normal(100, 3, 4))))
    day = today + timedelta(hours=9)
    store.put(requests("slowed", day, list(rng.normal(70, 3, 6))))   # after an update: 30 % slower
    store.put(requests("steady", day, list(rng.normal(98, 3, 6))))
    store.put(requests("rare", day, [50.0] * (MIN_TODAY - 1)))        # too few requests today to tell
    store.flush()

    hub = Hub(store, clock=lambda: now)
    rules = [r for r in load_rules(DEFAULT_RULES_PATH).rules if r.name == "model_slower_than_last_week"]
    engine = AlertEngine(hub.buffers, rules, clock=lambda: now)
    UsageService(store, hub.publish, clock=lambda: now).publish_ratios()

    ratios = {dict(k[1])["model"]: hub.buffers.latest_value(*k) for k in hub.buffers.keys(METRIC)}
    assert set(ratios) == {"slowed", "steady"}
    assert ratios["slowed"] < 0.8 < ratios["steady"]
    firing = [t for t in engine.evaluate(now) if t.event.state == "firing"]
    assert [dict(t.event.labels)["model"] for t in firing] == ["slowed"]
    assert firing[0].event.message.endswith(f": slowed decodes at {ratios['slowed']:.0%} of its median "
                                            "speed of the 7 days before today")
    store.close()
