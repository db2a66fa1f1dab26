"""``main.py --headless`` as a subprocess, the way a user runs it, and its config file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(text: str) -> None:
    path = Path(os.environ["LLMMON_CONFIG"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


class Headless:
    """``main.py --headless`` as the user runs it, until :meth:`stop` (Ctrl-C)."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--db", str(db)],
                                     cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": ""},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "recording to" not in line:
            self.proc.kill()
            raise AssertionError(line + self.proc.communicate()[1])

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)  # well under the old 30 s hang
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
