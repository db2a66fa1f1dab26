"""The proxy switch is a setting: turned on, it is on again after a restart (the runtime made
again from the same config file), with the file's comments kept; a file that is not TOML is
never overwritten by it."""
from __future__ import annotations

import os
from pathlib import Path

import openai

from app.config import config_path
from app.runtime import Runtime
from tests.sim.upstream import SimUpstream
from tests.support import query, wait_until
from tests.support.ports import free_run

CONFIG = """# my llmmon settings
[general]
discover_local = false     # only the server below
system_interval_s = 60

[[servers]]
url = "{url}"
kind = "vllm"              # a comment that must survive
"""


def running_routes(runtime: Runtime) -> list[str]:
    return [s.listen for s in runtime.proxies.status() if s.running] if runtime.proxies else []


def test_the_proxy_switch_survives_a_restart(db_file: Path) -> None:
    config = config_path()
    with SimUpstream(port=free_run(2)) as up:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(CONFIG.format(url=up.url), encoding="utf-8")
        route = f"http://127.0.0.1:{up.port + 1}"

        first = Runtime.create(db_file)
        try:
            first.start()
            assert running_routes(first) == []          # off until the user turns it on
            assert first.switch_proxy(True) == ""
            assert running_routes(first) == [route]
        finally:
            first.stop()
        saved = config.read_text(encoding="utf-8")
        assert saved.startswith(CONFIG.format(url=up.url)) and "[proxy]\nenabled = true" in saved

        second = Runtime.create(db_file)                # a restart: the same file
        try:
            second.start()
            assert second.proxies is not None and second.proxies.on
            assert running_routes(second) == [route]    # the same address as before
            client = openai.OpenAI(base_url=f"{route}/v1", api_key="x", max_retries=0)
            client.chat.completions.create(model="tiny-llama", messages=[])
            wait_until(lambda: query(db_file, "SELECT count(*) FROM requests")[0][0] == 1, what="the request row")
            assert second.switch_proxy(False) == ""
        finally:
            second.stop()
        assert "enabled = false" in config.read_text(encoding="utf-8")

        third = Runtime.create(db_file)
        try:
            third.start()
            assert third.proxies is not None and not third.proxies.on and running_routes(third) == []
        finally:
            third.stop()


def test_a_config_file_that_is_not_toml_is_left_alone(db_file: Path) -> None:
    config = config_path()
    config.parent.mkdir(parents=True, exist_ok=True)
    broken = "[general\ndiscover_local = false\n"
    config.write_text(broken, encoding="utf-8")
    runtime = Runtime.create(db_file)
    try:
        assert runtime.problems                          # the app says the file is broken, and runs
        problem = runtime.switch_proxy(True)
        assert "is not valid TOML" in problem and "left as it is" in problem
        assert runtime.proxies is not None and runtime.proxies.on   # the switch itself still works
    finally:
        runtime.stop()
    assert config.read_text(encoding="utf-8") == broken
    assert not [name for name in os.listdir(config.parent) if name.endswith(".tmp")]  # no temporary file left
