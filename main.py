"""llmmon's entry point: the desktop app by default, a headless recorder, or a subcommand.

    python main.py                  # the GUI
    python main.py --headless       # record without a window until Ctrl-C
    python main.py --db PATH ...    # use another database file (or set LLMMON_DB)
    python main.py COMMAND --help   # the subcommands below
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# Subcommands: name -> module. The module (Qt-free) provides ``add_arguments(parser)`` and
# ``run(args) -> int``, with its one-line help as the module docstring's first line.
COMMANDS: dict[str, str] = {
    "export": "app.export_cli",
    "proxy": "app.proxy.cli",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmmon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", metavar="PATH", help="SQLite database file (default: user data dir, or $LLMMON_DB)")
    parser.add_argument("--headless", action="store_true", help="record without any window until Ctrl-C")
    parser.add_argument("--session-name", default="", help="name of the session this run records")
    parser.add_argument("--smoke", action="store_true", help="start, show the window, quit (packaging check)")
    if COMMANDS:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, module_name in COMMANDS.items():
            module = importlib.import_module(module_name)
            summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
            command = sub.add_parser(name, help=summary, description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
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
    if getattr(args, "handler", None) is not None:
        return args.handler(args)
    if args.headless:
        return run_headless(args)
    from widgets.application import run_gui

    return run_gui(args)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
