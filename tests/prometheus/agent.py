"""A "machine" of the fleet: ``main.py --headless --db X --serve-metrics 127.0.0.1:P`` as a
subprocess with its own config dir (servers, proxy routes, alert rules) and database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.alerts.rules import DEFAULT_RULES_PATH
from tests.real_server.llama_server import free_port
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Agent:
    """One headless llmmon recorder with the exporter on.

    Args:
        name: the machine's name (Prometheus' ``instance`` label for it).
        home: its directory: ``config.toml``, ``alert_rules.toml`` (the shipped rules plus
            ``extra_rules``), the database and the output.
        config: the text of its ``config.toml``.
    """

    name: str
    home: Path
    config: str
    extra_rules: str = ""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def db(self) -> Path:
        return self.home / "llmmon.db"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.home / "output.txt"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "QT_QPA_PLATFORM": "", "LLMMON_CONFIG": str(self.home / "config" / "config.toml"),
                "XDG_DATA_HOME": str(self.home / "data"), "XDG_STATE_HOME": str(self.home / "state")}

    def write_config(self) -> None:
        config_dir = self.home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "config.toml").write_text(self.config, encoding="utf-8")
        rules = DEFAULT_RULES_PATH.read_text(encoding="utf-8") + "\n" + self.extra_rules
        (config_dir / "alert_rules.toml").write_text(rules, encoding="utf-8")

    def start(self, timeout: float = 30.0) -> Agent:
        """Start recording and return once the exporter listens."""
        if self.starts == 0:
            self.write_config()
        self.starts += 1
        mark = f"metrics for Prometheus on http://{self.address}/metrics"
        with self.output.open("a") as out:
            out.write(f"--- start {self.starts}\n")
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(self.db),
                 "--session-name", f"{self.name} run {self.starts}", "--serve-metrics", self.address],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: self._started(mark), timeout, f"agent {self.name} to serve its metrics")
        return self

    def _started(self, mark: str) -> bool:
        text = self.output.read_text(errors="replace").rpartition("--- start")[2]
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"agent {self.name} exited with status {self.proc.returncode}:\n{text[-3000:]}")
        return mark in text

    def stop(self) -> None:
        """Ctrl-C, as a user would: everything recorded is written first."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        assert self.proc.returncode == 0, self.output.read_text(errors="replace")[-3000:]

    def restart(self) -> None:
        self.stop()
        self.start()

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """``main.py ARGS`` with this machine's config (e.g. ``rules --prometheus FILE``)."""
        return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)
