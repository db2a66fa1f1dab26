"""How llmmon names a server: ``<kind>@<host>:<port>``. Collectors label their series with it
and the proxy labels its request records with it, so both views of one server line up."""
from __future__ import annotations

from urllib.parse import urlsplit


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", 11434)`` from ``"http://127.0.0.1:11434"`` or ``"127.0.0.1:11434"``
    (the scheme's default port when none is written)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def server_name(kind: str, url: str) -> str:
    """The default display name of a server: ``<kind>@<host>:<port>``."""
    host, port = host_port(url)
    return f"{kind}@{host}:{port}"


# What people call each kind (the ``kind`` of ``<kind>@<host>:<port>``).
KIND_NAMES = {"ollama": "Ollama", "vllm": "vLLM", "llamacpp": "llama.cpp", "openai": "OpenAI-compatible server"}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def spoken_server(name: str) -> str:
    """A server's name the way a person says it: ``"llama.cpp on :8080"`` for
    ``llamacpp@127.0.0.1:8080`` (the host only when it is another machine); a name the user
    chose is kept as it is.

    >>> spoken_server("llamacpp@127.0.0.1:8080"), spoken_server("vllm@gpu-box:8000"), spoken_server("my box")
    ('llama.cpp on :8080', 'vLLM on gpu-box:8000', 'my box')
    """
    kind, at, address = name.partition("@")
    if not at or kind not in KIND_NAMES:
        return name
    host, port = host_port(address)
    where = f":{port}" if host in _LOCAL_HOSTS else f"{host}:{port}"
    return f"{KIND_NAMES[kind]} on {where}"
