"""How llmmon tells servers apart, and what it calls them.

A server's *identity* is ``<kind>@<host>:<port>`` of its normalised URL (:func:`server_name`):
collectors label their series with it, the proxy labels its request records with it, and it is
what the database stores, so both views of one server line up and its history stays one series
whatever the user calls it. Its *display name* (:func:`display_name`) is what charts, tables and
notifications show: the ``name`` given in config.toml, else the identity. Renaming a server
changes what is shown, never what is stored.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from app.config import Settings
from app.server_kinds import is_server_kind, server_kind


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", 11434)`` from ``"http://127.0.0.1:11434"`` or ``"127.0.0.1:11434"``
    (the scheme's default port when none is written)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def normalise_url(url: str) -> str:
    """One spelling per server: scheme and host lower case, ``localhost`` → ``127.0.0.1``,
    explicit port, no trailing slash.

    >>> normalise_url("HTTP://localhost:11434/")
    'http://127.0.0.1:11434'
    """
    parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
    host, port = host_port(parts.geturl())
    host = "127.0.0.1" if host in ("localhost", "::1") else host.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def address(url: str) -> str:
    """``host:port`` of a server, as its identity spells it.

    >>> address("http://LOCALHOST:8080/")
    '127.0.0.1:8080'
    """
    return "{}:{}".format(*host_port(normalise_url(url)))


def server_name(kind: str, url: str) -> str:
    """A server's identity, ``<kind>@<host>:<port>`` (the ``server`` label of what is stored).

    >>> server_name("llamacpp", "http://localhost:8080")
    'llamacpp@127.0.0.1:8080'
    """
    return f"{kind}@{address(url)}"


def display_name(server: str, settings: Settings) -> str:
    """What the user reads for the server ``server`` (an identity): the ``name`` of its
    ``[[servers]]`` entry (or of a ``[[proxy.routes]]`` entry in front of it), else the
    identity itself. Any other text (a GPU, an old record's name) is returned unchanged.

    >>> from app.config import ServerEntry
    >>> named = Settings(servers=[ServerEntry("http://localhost:8080", name="gemma-local")])
    >>> display_name("llamacpp@127.0.0.1:8080", named), display_name("vllm@127.0.0.1:8000", named)
    ('gemma-local', 'vllm@127.0.0.1:8000')
    """
    _kind, at, where = server.partition("@")
    if not at:
        return server
    for url, name in [*((e.url, e.name) for e in settings.servers),
                      *((r.upstream, r.name) for r in settings.proxy.routes)]:
        if name and address(url) == where:
            return name
    return server


_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def spoken_server(name: str) -> str:
    """A server's name the way a person says it: ``"llama.cpp on :8080"`` for
    ``llamacpp@127.0.0.1:8080`` (the host only when it is another machine); a name the user
    chose is kept as it is.

    >>> spoken_server("llamacpp@127.0.0.1:8080"), spoken_server("vllm@gpu-box:8000"), spoken_server("my box")
    ('llama.cpp on :8080', 'vLLM on gpu-box:8000', 'my box')
    """
    kind, at, where_at = name.partition("@")
    if not at or not is_server_kind(kind):
        return name
    host, port = host_port(where_at)
    where = f":{port}" if host in _LOCAL_HOSTS else f"{host}:{port}"
    return f"{server_kind(kind).display_name} on {where}"  # what people call the kind
