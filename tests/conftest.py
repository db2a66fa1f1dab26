"""Test configuration: Qt offscreen by default, isolated user dirs, a fresh DB per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import user_dirs_env

# Before anything imports Qt. Tests that need a real X server start Xvfb themselves.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Shared fixtures (memory_keyring, webhook_receiver, proxied, site; tiny_model, llama_server),
# available to every test by name.
pytest_plugins = ["tests.support.keyring_memory", "tests.support.webhook_receiver", "tests.support.proxy",
                  "tests.support.llamaserver_site", "tests.real_server.fixtures"]


# The tiers that start real servers (a llama-server built from source; a Prometheus): every test
# in them carries the real_server marker, so -m "not real_server" leaves them out. Nothing is
# skipped by default.
REAL_SERVER_TIERS = tuple(Path(__file__).resolve().parent / tier for tier in ("real_server", "prometheus"))


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection looks at the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(tier in item.path.resolve().parents for tier in REAL_SERVER_TIERS):
            item.add_marker(pytest.mark.real_server)


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user's data, config and logs."""
    for name, value in user_dirs_env(tmp_path_factory.mktemp("home")).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLMMON_DB", raising=False)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "llmmon.db"


@pytest.fixture
def runtime(db_file: Path):
    """The app's core on a fresh database, not started, with no local-port discovery (so what a
    test sees does not depend on what else runs on this machine); stopped afterwards."""
    from app.config import Settings
    from app.runtime import Runtime

    rt = Runtime.create(db_file, Settings(discover_local=False))
    yield rt
    rt.stop()
