"""The proxy's options and naming: the parts that need no network stack, so the runtime and
the settings can use them without importing aiohttp at start-up."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from app.server_kinds import kind_for_port, server_kind
from app.server_names import host_port, server_name


@dataclass(frozen=True)
class ForwardOptions:
    """How the proxy treats requests (from the ``[proxy]`` settings)."""

    include_usage: bool = False        # add stream_options.include_usage to OpenAI streams
    store_content: bool = False        # keep prompt and response text in the record
    content_max_chars: int = 16_384    # cap on each stored text
    connect_timeout: float = 10.0
    read_timeout: float = 600.0        # longest silence from the upstream (model loads are slow)
    body_timeout: float = 120.0        # longest time a client may take to send its body


def server_label(upstream: str, kind: str = "auto") -> str:
    """The ``server`` label of an upstream, as the collectors name it: ``kind@host:port``
    (``auto``: the kind whose default port the upstream's is, else OpenAI-compatible)."""
    found = kind_for_port(host_port(upstream)[1]) if kind in ("", "auto") else server_kind(kind)
    return server_name(found.id, upstream)


def port_problem(port: int) -> str:
    """Why ``port`` cannot be listened on (``""`` when it can). Checked before binding: the OS
    would quietly take 99999 modulo 65536, and the user would be told the wrong port."""
    return "" if 1 <= port <= 65535 else f"{port} is not a port (a port is a number from 1 to 65535)"


def is_loopback(host: str) -> bool:
    """Whether a listen address is on loopback only (``127.0.0.1``, ``::1``, ``localhost``)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """A host as written in a URL: IPv6 addresses in brackets."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host
