"""Free TCP ports on 127.0.0.1 for tests that need to know a server's neighbours (a proxy
route goes on the server's port + 1)."""
from __future__ import annotations

import socket
from contextlib import ExitStack


def free_run(n: int, tries: int = 200) -> int:
    """The first of ``n`` consecutive ports that are all free right now."""
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + n > 65536:
            continue
        with ExitStack() as held:
            try:
                for port in range(first, first + n):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {n} consecutive free ports found")
