"""Test connection: against simulated servers replaying recorded payloads, the answer names the
kind, the version and the models, or says why the server cannot be used, in the collectors'
own words; a key is needed where the server wants one."""
from __future__ import annotations

from collectors.connection_test import check_connection
from tests.sim.ollama import SimOllama, recording
from tests.sim.server import HTML_PAGE, SimServer
from tests.sim.vllm import SimVllm


def test_ollama_is_recognised_with_its_version_loaded_and_installed_models() -> None:
    with SimOllama() as ollama:
        result = check_connection(ollama.url)
    assert (result.ok, result.kind, result.version) == (True, "ollama", recording("version.json")["version"])
    assert result.models == tuple(m["name"] for m in recording("ps.json")["models"])
    assert result.installed == len(recording("tags.json")["models"])
    assert result.summary().startswith(f"Ollama {result.version} at {ollama.url}: 1 model loaded (")


def test_vllm_is_recognised_with_its_version_and_served_model() -> None:
    with SimVllm() as vllm:
        result = check_connection(vllm.url)
    assert (result.ok, result.kind, result.version) == (True, "vllm", "0.32.0")
    assert result.models == tuple(m["id"] for m in vllm.models["data"])
    assert result.summary() == f"vLLM 0.32.0 at {vllm.url}: 1 model ({result.models[0]})"


def test_a_server_behind_a_key_says_so_and_answers_with_the_key() -> None:
    with SimVllm(api_key="s3cret-key") as vllm:
        refused = check_connection(vllm.url)
        accepted = check_connection(vllm.url, api_key="s3cret-key")
    assert not refused.ok and "HTTP 401" in refused.reason and "check the API key" in refused.reason
    assert (accepted.ok, accepted.kind) == (True, "vllm")
    assert "s3cret-key" not in refused.summary() + accepted.summary()


def test_the_chosen_kind_is_tested_as_such() -> None:
    with SimVllm() as vllm:
        result = check_connection(vllm.url, kind="ollama")
    assert not result.ok and result.kind == "ollama"
    assert result.summary() == f"Cannot use {vllm.url} as Ollama: HTTP 404: 404 page not found"


def test_nothing_listening_and_a_web_page_are_explained() -> None:
    with SimServer() as gone:
        gone.go_down()  # nothing listens on its port any more
        port = gone.url.rpartition(":")[2]
        refused = check_connection(f"localhost:{port}")
    assert refused.summary() == f"Cannot use http://127.0.0.1:{port}: connection refused on :{port}"
    with SimServer() as site:
        site.set_fault(HTML_PAGE)
        page = check_connection(site.url)
    assert not page.ok and page.reason == "not an LLM server (an HTML page)"
