"""A simulated ``llama-server`` replaying the payloads recorded from a real one
(``tests/sim/recordings/llamaserver/``): ``/health``, ``/props``, ``/slots`` and ``/metrics``.
It starts on the idle ``/metrics`` page; :meth:`SimLlamaServer.advance` moves to the page taken
after a batch of requests (its token counters grew), :meth:`SimLlamaServer.restart` goes back
to the idle page (counters from zero, as after a real restart).
"""
from __future__ import annotations

from pathlib import Path

from tests.sim.server import Reply, SimServer

RECORDINGS = Path(__file__).resolve().parent / "recordings" / "llamaserver"
PAGES = ("metrics", "metrics_after")


def page(name: str) -> str:
    return (RECORDINGS / name).read_text(encoding="utf-8")


class SimLlamaServer(SimServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self.pages = [page(name) for name in PAGES]
        self.step = 0
        self.route("/health", lambda _req: Reply(200, (RECORDINGS / "health").read_bytes()))
        self.route("/props", lambda _req: Reply(200, (RECORDINGS / "props").read_bytes()))
        self.route("/slots", lambda _req: Reply(200, (RECORDINGS / "slots").read_bytes()))
        self.route("/metrics", lambda _req: Reply.text(self.pages[self.step]))

    def advance(self) -> None:
        """A batch of requests was served: the counters grew."""
        self.step = 1

    def restart(self) -> None:
        """The server restarted: every counter from zero."""
        self.step = 0
