"""The Prometheus API client of the Fleet tab when Prometheus is not there or not right: down,
hanging, not a Prometheus, refusing credentials, answering nonsense. Each becomes one
PrometheusError that says so; the credentials come from the keyring and are sent, never shown.
(Against a real Prometheus: tests/prometheus/test_fleet_panel.py.)"""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import PrometheusSource
from app.fleet.client import PrometheusClient, PrometheusError, parse_alerts, parse_matrix, parse_vector
from app.secrets import set_secret
from tests.sim.server import GARBAGE, HANG, HTML_PAGE, Reply, Request, SimServer
from tests.support.keyring_memory import MemoryKeyring


def error_of(call) -> str:
    with pytest.raises(PrometheusError) as caught:
        call()
    return str(caught.value)


def test_down_hanging_or_not_a_prometheus_each_say_so() -> None:
    with SimServer() as sim:
        client = PrometheusClient(sim.url, timeout=0.5)
        sim.set_fault(HANG)
        assert error_of(lambda: client.query("up")) == "no answer within 0.5 s"
        sim.set_fault(HTML_PAGE)
        assert "answered HTTP 200 with something that is not the Prometheus API" in error_of(lambda: client.query("up"))
        sim.set_fault(GARBAGE)
        assert "not the Prometheus API" in error_of(lambda: client.alerts())
        sim.set_fault(Reply.json({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}, 400))
        assert error_of(lambda: client.query("up{")) == "HTTP 400: parse error at char 3"
        sim.set_fault(Reply.json({"status": "success", "data": {"resultType": "matrix", "result": []}}))
        assert error_of(lambda: client.query("up")) == "expected a vector, got a matrix"
        client.close()
        sim.go_down()
        client = PrometheusClient(sim.url, timeout=0.5)
        assert error_of(lambda: client.query("up")) == "cannot connect (Connection refused)"
        client.close()


def test_credentials_come_from_the_keyring_and_stay_out_of_errors(memory_keyring: MemoryKeyring) -> None:
    seen: list[str] = []

    def guarded(req: Request) -> Reply:
        seen.append(req.headers.get("Authorization", ""))
        return Reply.json({"status": "error", "error": "unauthorized"}, 401)

    set_secret("prometheus_token", "s3cret-token")
    set_secret("prometheus_password", "pa55")
    with SimServer({"/api/v1/query": guarded}) as sim:
        bearer = PrometheusClient.for_source(PrometheusSource(sim.url, secret_ref="prometheus_token"))
        message = error_of(lambda: bearer.query("up"))
        basic = PrometheusClient.for_source(PrometheusSource(sim.url, username="grafana",
                                                             secret_ref="prometheus_password"))
        error_of(lambda: basic.query("up"))
    assert message.startswith("refused the credentials (HTTP 401)") and "s3cret" not in message
    assert seen == ["Bearer s3cret-token", "Basic " + base64.b64encode(b"grafana:pa55").decode()]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)
shaped = st.fixed_dictionaries({"resultType": st.sampled_from(["vector", "matrix", "scalar", "string"]),
                                "result": json_values, "alerts": json_values})


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, shaped))
def test_any_answer_parses_or_says_it_is_unexpected(data: object) -> None:
    for parse in (parse_vector, parse_matrix, parse_alerts):
        try:
            parse(data)
        except PrometheusError:
            pass
