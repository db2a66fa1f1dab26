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
