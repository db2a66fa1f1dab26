"""llmmon's entry point: the desktop app by default, or a headless recorder.

    python main.py                  # the GUI
    python main.py --headless       # record without a window until Ctrl-C
    python main.py --db PATH ...    # use another database file (or set LLMMON_DB)
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmmon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", metavar="PATH", help="SQLite database file (default: user data dir, or $LLMMON_DB)")
    parser.add_argument("--headless", action="store_true", help="record without any window until Ctrl-C")
    parser.add_argument("--session-name", default="", help="name of the session this run records")
    parser.add_argument("--smoke", action="store_true", help="start, show the window, quit (packaging check)")
    return parser.parse_args(argv)


def run_headless(args: argparse.Namespace) -> int:
    from app.runtime import Runtime

    runtime = Runtime.create(args.db, session_name=args.session_name)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runtime.start()
    print(f"llmmon: recording to {runtime.store.path} (session {runtime.store.session_id}); "
          "Ctrl-C to stop", flush=True)
    while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
        pass
    runtime.stop()
    print("llmmon: stopped, all data written", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging

    args = parse_args(argv)
    setup_logging()
    if args.headless:
        return run_headless(args)
    from widgets.application import run_gui

    return run_gui(args)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
