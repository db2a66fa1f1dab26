"""A real Prometheus server for the tests: Debian's ``prometheus`` package (2.42, with
``promtool``), installed by ``scripts/system-deps``.

:class:`PrometheusServer` starts it on a free 127.0.0.1 port with a temporary TSDB, scraping
and evaluating rules every second; :meth:`PrometheusServer.configure` rewrites its scrape
targets and rule files and reloads it (``--web.enable-lifecycle``). When the binaries are
missing the tests FAIL with :data:`NOT_INSTALLED` (never skip): a machine that cannot run
Prometheus must not pass this tier silently.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.real_server.llama_server import free_port
from tests.support import wait_until

NOT_INSTALLED = (
    "the real-Prometheus tests need the `prometheus` and `promtool` binaries (Debian/Ubuntu "
    "package `prometheus`, 2.42 or later). Install them with `sudo scripts/system-deps` (or "
    "`apt-get install --no-install-recommends prometheus`), or put them on $PATH.")
JOB = "llmmon"


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``, or a test failure saying how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {NOT_INSTALLED}")
    return found


@dataclass
class PrometheusServer:
    """One Prometheus process. ``targets`` maps an instance name to ``host:port``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    targets: dict[str, str] = field(default_factory=dict)
    rule_files: list[Path] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed. Each target's instance label is the machine name.
        static = [{"targets": [address], "labels": {"instance": name}} for name, address in self.targets.items()]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": static}],
        }
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = (self.workdir / "prometheus.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--web.enable-lifecycle", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        wait_until(self._ready, timeout, f"prometheus on port {self.port} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with status {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def configure(self, targets: dict[str, str] | None = None, rule_files: list[Path] | None = None) -> None:
        """Scrape ``targets`` and evaluate ``rule_files`` from now on (reloads the config and
        waits until every target has been scraped once)."""
        if targets is not None:
            self.targets = dict(targets)
        if rule_files is not None:
            self.rule_files = list(rule_files)
        self._write_config()
        reply = httpx.post(f"{self.url}/-/reload", timeout=10.0)
        assert reply.status_code == 200, f"reload refused: {reply.text}\n{self.log_tail()}"
        wait_until(self._scraped_all, 20, f"prometheus to scrape {sorted(self.targets)}")

    def _scraped_all(self) -> bool:
        active = self.api("/api/v1/targets", state="active")["activeTargets"]
        scraped = {t["labels"].get("instance") for t in active if t.get("health") != "unknown"}
        return set(self.targets) <= scraped

    def api(self, path: str, **params: str | float) -> dict:
        reply = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        body = reply.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """The result of an instant query (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        return self.api("/api/v1/query", **params)["result"]

    def value(self, promql: str) -> float | None:
        """The one value of a query that should give at most one series."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql} gave {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return self.api("/api/v1/alerts")["alerts"]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
