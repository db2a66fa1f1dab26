"""A simulated Ollama that replays the documented payloads of ``/api/version``, ``/api/tags``
and ``/api/ps`` (``tests/sim/recordings/ollama/``) and whose loaded models can change between
polls, the way ``ollama run`` / ``keep_alive`` change them on a real server."""
from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

from tests.sim.server import Reply, Request, SimServer

RECORDINGS = Path(__file__).resolve().parent / "recordings" / "ollama"


def recording(name: str) -> dict:
    return json.loads((RECORDINGS / name).read_text(encoding="utf-8"))


class SimOllama(SimServer):
    """Ollama on 127.0.0.1.

    Args:
        loaded: the ``/api/ps`` models to start with (default: the docs' ``mistral:latest``).
    """

    def __init__(self, loaded: list[dict] | None = None, port: int = 0) -> None:
        super().__init__(port=port)
        self.version = recording("version.json")
        self.tags = recording("tags.json")
        self._loaded = list(recording("ps.json")["models"] if loaded is None else loaded)
        self._lock = threading.Lock()
        self.route("/api/version", lambda _req: Reply.json(self.version))
        self.route("/api/tags", lambda _req: Reply.json(self.tags))
        self.route("/api/ps", self._ps)

    def _ps(self, _req: Request) -> Reply:
        with self._lock:
            return Reply.json({"models": copy.deepcopy(self._loaded)})

    def load(self, model: dict) -> None:
        """A model gets loaded (appears in ``/api/ps``)."""
        with self._lock:
            self._loaded = [m for m in self._loaded if m["name"] != model["name"]] + [model]

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded = [m for m in self._loaded if m["name"] != name]

    @staticmethod
    def partially_offloaded_model() -> dict:
        """The docs' ``gemma4`` entry: 81 % of it in VRAM, with ``context_length``."""
        return recording("ps_partial_offload.json")["models"][0]
