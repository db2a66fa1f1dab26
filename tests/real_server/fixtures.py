"""Session fixtures of the tiers that need a real ``llama-server`` (tests/real_server/ and
tests/prometheus/, marked ``real_server``), registered once by tests/conftest.py: the tiny model
and one running ``llama-server``, started only when a test asks for it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_server.llama_server import NOT_INSTALLED, LlamaServer


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight GGUF model, written once per test session."""
    try:  # imported here: a conftest that fails to import would stop the whole test run
        from tests.real_server.tiny_gguf import write_tiny_gguf
    except ImportError as exc:
        pytest.fail(f"{exc}: {NOT_INSTALLED}")
    return write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A ``llama-server`` on a free 127.0.0.1 port, shared by the whole session.

    Tests that kill or restart a server start their own :class:`LlamaServer` instead.
    """
    server = LlamaServer(tiny_model, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()
