"""Every query of the Grafana dashboard runs on the real Prometheus scraping the two agents, and
each one whose metrics that fleet has returns data; the machine picker lists both machines."""
from __future__ import annotations

import functools

import httpx

from tests.core.test_grafana_dashboard import dashboard, metric_names, queries
from tests.prometheus.conftest import Fleet
from tests.prometheus.prometheus import PrometheusServer
from tests.prometheus.test_scrape import chat
from tests.support import wait_until


def grafana(expr: str) -> str:
    """The query as Grafana sends it with "All" machines and a 1-minute rate interval."""
    return expr.replace("$instance", ".*").replace("$__rate_interval", "1m")


def test_every_dashboard_query_runs_on_the_fleets_prometheus(fleet: Fleet, prometheus: PrometheusServer) -> None:
    chat(fleet.proxy_url, 2)
    refused = httpx.post(f"{fleet.proxy_url}/v1/chat/completions", content=b"{not json", timeout=30)
    assert refused.status_code >= 400  # a failed request for the Errors panels
    # a rate needs two samples of each series: of the good requests' and of the failed one's
    def scraped_twice(counter: str) -> bool:
        return (prometheus.value(f"min(count_over_time({counter}[1m]))") or 0) >= 2

    for counter in ('llm_requests_total{instance="gpu-box-b", error_type=""}',
                    'llm_requests_total{instance="gpu-box-b", error_type!=""}'):
        wait_until(functools.partial(scraped_twice, counter), timeout=20, what=f"two scrapes of {counter}")
    machines = prometheus.api("/api/v1/label/instance/values", **{"match[]": "llmmon_source_up"})
    assert {"gpu-box-a", "gpu-box-b"} <= set(machines)  # the dashboard's machine picker
    present = set(prometheus.api("/api/v1/label/__name__/values"))
    answered = 0
    for expr in queries(dashboard()):
        result = prometheus.query(grafana(expr))  # fails the test if Prometheus refuses it
        if metric_names(expr) <= present:
            assert result, f"no data for {expr}"
            answered += 1
    assert answered >= 20  # all but the GPU panels (no GPU here) and the series cap's counter
