"""``resources/llmmon-agent.service``: the systemd user unit of docs/fleet.md starts the headless
recorder with the exporter on 127.0.0.1 until the user names another address."""
from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import main

UNIT = Path(__file__).resolve().parents[2] / "resources" / "llmmon-agent.service"


class UnitFile(configparser.RawConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # systemd keys are case-sensitive


def unit() -> UnitFile:
    parser = UnitFile(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def command_line(listen: str) -> list[str]:
    """ExecStart as systemd runs it with LLMMON_METRICS_LISTEN set to ``listen``."""
    exec_start = unit()["Service"]["ExecStart"]
    return shlex.split(re.sub(r"\$\{LLMMON_METRICS_LISTEN\}", listen, exec_start))


def test_the_unit_runs_the_headless_recorder_on_loopback_by_default() -> None:
    service = unit()["Service"]
    found = re.search(r"^Environment=LLMMON_METRICS_LISTEN=(\S+)$", UNIT.read_text(), re.MULTILINE)
    assert found is not None
    default = found.group(1)
    program, *args = command_line(default)
    assert program == "%h/.local/bin/llmmon"  # pip's console script (pyproject: llmmon = "main:run")
    parsed = main.parse_args(args)
    assert parsed.headless and parsed.serve_metrics == ("127.0.0.1", 9787)
    assert main.parse_args(command_line("192.168.1.20:9787")[1:]).serve_metrics == ("192.168.1.20", 9787)
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == str(main.EXIT_REFUSED)
    assert unit()["Install"]["WantedBy"] == "default.target"  # a user unit
