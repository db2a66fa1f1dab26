"""llmmon's metering proxy: a transparent local HTTP proxy in front of an LLM server that
measures every inference request exactly (Qt-free).

Point a client at the proxy instead of the server (Ollama on :11434 → the proxy on :11435;
an OpenAI-compatible server on :8000 → :8001). Bytes pass through unchanged; a meter reads
the same bytes and publishes one :class:`~app.records.RequestRecord` per request: time to
first token, latency, inter-token latency, the server's own token counts and speeds.

Modules: :mod:`~app.proxy.server` (the listening proxy and its thread),
:mod:`~app.proxy.forward` (forwarding one request, error handling),
:mod:`~app.proxy.meter` (reading NDJSON / SSE / JSON answers),
:mod:`~app.proxy.lines` (cutting a stream into lines, linear and capped),
:mod:`~app.proxy.log_once` (faults logged once per kind),
:mod:`~app.proxy.request_body` (what is read from, or opted-in added to, request bodies),
:mod:`~app.proxy.options` (options and server names, without the network stack),
:mod:`~app.proxy.group` (the proxies the settings ask for), :mod:`~app.proxy.cli`
(``main.py proxy``).

Usage from Python (e.g. a test driving a real server)::

    from app.proxy import ProxyServer

    records = []
    proxy = ProxyServer("http://127.0.0.1:8080", listen_port=0, publish=records.extend)
    port = proxy.start()                  # bound on 127.0.0.1; raises OSError if it cannot
    # ... openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x") ...
    proxy.stop()                          # in-flight requests end as "cancelled"
    records[0].completion_tokens, records[0].ttft_s
"""
from __future__ import annotations

from typing import Any

from app.proxy.options import ForwardOptions, server_label

__all__ = ["ForwardOptions", "ProxyServer", "server_label"]


def __getattr__(name: str) -> Any:
    if name == "ProxyServer":  # lazily: importing aiohttp costs ~0.2 s of start-up
        from app.proxy.server import ProxyServer
        return ProxyServer
    raise AttributeError(name)
