"""Test configuration: Qt offscreen by default, isolated user dirs, a fresh DB per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports Qt. Tests that need a real X server start Xvfb themselves.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Shared fixtures (memory_keyring, webhook_receiver, proxied), available to every test by name.
pytest_plugins = ["tests.support.keyring_memory", "tests.support.webhook_receiver", "tests.support.proxy"]


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user's data, config and logs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("LLMMON_DB", raising=False)
    monkeypatch.setenv("LLMMON_CONFIG", str(home / "config" / "llmmon" / "config.toml"))


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
