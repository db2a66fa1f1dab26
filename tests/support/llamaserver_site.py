"""llama-server's recorded answers (tests/sim/recordings/llamaserver/) served over real HTTP by
a plain static file server: the ``site`` fixture, registered for every test by tests/conftest.py.
A test edits the copied files to change what the server answers."""
from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

RECORDED = Path(__file__).parents[1] / "sim" / "recordings" / "llamaserver"


class _Replay(SimpleHTTPRequestHandler):
    """Serves the file named like the path; a ``<name>.status`` file beside it sets the status."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status = Path(self.translate_path(self.path) + ".status")
        if not status.exists():
            return super().do_GET()
        body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(int(status.read_text()))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1: the file ``props`` answers ``GET /props``."""
    root = tmp_path / "site"
    shutil.copytree(RECORDED, root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Replay, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()
