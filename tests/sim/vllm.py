"""A simulated vLLM (or plain OpenAI-compatible server) replaying recorded ``/metrics`` pages.

``generation="v1"`` replays the pages recorded from a running vLLM (new metric names),
``"v0"`` the pages with the old names (``tests/sim/recordings/vllm/``). The server starts on
the idle page; :meth:`SimVllm.advance` moves to the page taken after the requests (counters
grew, histograms filled), :meth:`SimVllm.restart` goes back to the idle page (counters reset, as
after a real restart). :meth:`SimVllm.kill_engine` makes ``/health`` and the API answer what
vLLM answers when its engine died. ``metrics=False`` is a server without ``/metrics``.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.sim.server import NOT_FOUND, Reply, Request, Route, SimServer

RECORDINGS = Path(__file__).resolve().parent / "recordings" / "vllm"
PAGES = {
    "v1": ("metrics_v1_idle.txt", "metrics_v1_after_24_requests.txt"),
    "v0": ("metrics_v0_idle.txt", "metrics_v0_after_40_requests.txt"),
}
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def page(name: str) -> str:
    return (RECORDINGS / name).read_text(encoding="utf-8")


class SimVllm(SimServer):
    """vLLM on 127.0.0.1.

    Args:
        generation: ``"v1"`` (new metric names) or ``"v0"`` (old names).
        metrics: serve ``/metrics`` (False: a plain OpenAI-compatible server).
        api_key: when set, every route but ``/health`` wants ``Authorization: Bearer <key>``.
    """

    def __init__(self, generation: str = "v1", metrics: bool = True, api_key: str | None = None,
                 port: int = 0) -> None:
        super().__init__(port=port)
        self.pages = [page(name) for name in PAGES[generation]]
        self.step = 0
        self.api_key = api_key
        self.engine_dead = False
        self.models = json.loads((RECORDINGS / "models.json").read_text(encoding="utf-8"))
        self.route("/health", self._health)
        self.route("/version", self._guarded(lambda _req: Reply.json({"version": "0.32.0"})))
        self.route("/v1/models", self._guarded(lambda _req: Reply.json(self.models)))
        if metrics:
            self.route("/metrics", self._guarded(
                lambda _req: Reply.text(self.pages[min(self.step, len(self.pages) - 1)], content_type=PROMETHEUS_TEXT)))
        else:
            self.route("/metrics", lambda _req: NOT_FOUND)

    def _dead(self) -> Reply:
        return Reply(500, (RECORDINGS / "enginedead_500.json").read_bytes())

    def _health(self, _req: Request) -> Reply:
        return self._dead() if self.engine_dead else Reply(200, b"", "application/json")

    def _guarded(self, route: Route) -> Route:
        def guarded(req: Request) -> Reply:
            if self.api_key and req.headers.get("Authorization") != f"Bearer {self.api_key}":
                return Reply.json({"error": "Unauthorized"}, 401)
            return self._dead() if self.engine_dead and req.path.startswith("/v1/") else route(req)
        return guarded

    def advance(self) -> None:
        """Requests were served: the next recorded page (counters up, histograms filled)."""
        self.step += 1

    def restart(self) -> None:
        """The server restarted: back to the idle page, every counter from zero."""
        self.step = 0

    def kill_engine(self) -> None:
        self.engine_dead = True
