"""llmmon's entry point: the desktop app by default, a headless recorder, or a subcommand.

    python main.py                  # the GUI
    python main.py --headless       # record without a window until Ctrl-C
    python main.py --db PATH ...    # use another database file (or set LLMMON_DB)
    python main.py COMMAND --help   # the subcommands below (--db also works after COMMAND)

Only one llmmon records into a database at a time: a second window brings the first one to
the front, a second recorder (--headless, proxy, bench) is refused.
"""
from __future__ import annotations

import time

STARTED_AT = time.time()  # first thing: the start-up figure counts from here

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from app.recorder_lock import RecorderLock

# Subcommands: name -> (module, one-line help). The module (Qt-free) provides
# ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when its command is
# used, so starting the GUI pays for none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("app.export_cli", "export a session to CSV files"),
    "proxy": ("app.proxy.cli", "run the metering proxy without a window"),
    "rules": ("app.alerts.rules_cli", "write the alert rules for Prometheus"),
    "usage": ("app.usage_cli", "print requests, tokens and energy per model over a range"),
    "bench": ("app.benchmarks.cli", "run a benchmark without a window, or compare two"),
    "install": ("widgets.desktop_install", "put llmmon in the desktop's application menu"),
    "uninstall": ("widgets.desktop_install", "take llmmon out of the application menu again"),
}


def listen_arg(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (the proxy's parser, imported only when the option is used)."""
    from app.proxy.cli import listen_arg as parse

    return parse(text)


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options that work before and after the subcommand. On a subcommand they have no default
    (SUPPRESS), so a value given after it wins and one given before it is kept; a subcommand
    may declare one of them itself (its declaration replaces this one)."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--db", metavar="PATH", default=default(None),
                        help="SQLite database file (default: user data dir, or $LLMMON_DB)")
    parser.add_argument("--session-name", default=default(""), help="name of the session this run records")
    parser.add_argument("--serve-metrics", type=listen_arg, metavar="[HOST:]PORT", default=default(None),
                        help="serve /metrics for Prometheus here (127.0.0.1 unless HOST is given)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmmon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    global_options(parser, defaults=True)
    parser.add_argument("--headless", action="store_true", help="record without any window until Ctrl-C")
    parser.add_argument("--smoke", action="store_true", help="start, show the window, quit (packaging check)")
    args_list = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in args_list if a in COMMANDS), None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 conflict_handler="resolve")
        global_options(command, defaults=False)
        if name == chosen:
            module = importlib.import_module(module_name)
            command.description = module.__doc__
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
    return parser.parse_args(args_list)


EXIT_REFUSED = 2     # the database file cannot be used (the message says why and what to do)


def run_headless(args: argparse.Namespace) -> int:
    from app.runtime import EXIT_STOPPED, Runtime

    runtime = Runtime.create(args.db, session_name=args.session_name, serve_metrics=args.serve_metrics)
    runtime.start()
    return EXIT_STOPPED if runtime.record_until_signalled() else 0


def show_refusal(message: str) -> None:
    """The refusal in a dialog, for users who started the GUI from a menu (no terminal)."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    _app = QApplication.instance() or QApplication(sys.argv[:1])
    QMessageBox.critical(None, "llmmon cannot open its database", message)


def records(args: argparse.Namespace) -> bool:
    """Whether this run records into the database without a window (the GUI takes the lock
    itself, after asking a window already running to come forward)."""
    if args.headless or args.command == "proxy":
        return True
    return args.command == "bench" and not (args.list or args.compare)  # a run, not a listing


def hold_recorder_lock(args: argparse.Namespace) -> RecorderLock | None:
    """The database's recorder lock when this run records; it must stay referenced (it is held
    until the process ends). Raises ``AlreadyRecording``."""
    if not records(args):
        return None
    from app.config import db_path
    from app.recorder_lock import RecorderLock

    lock = RecorderLock(db_path(args.db), "headless" if args.headless else args.command)
    lock.acquire()
    return lock


def main(argv: list[str] | None = None) -> int:
    from app.logs import setup_logging
    from app.recorder_lock import AlreadyRecording
    from app.storage.schema import DatabaseRefused

    args = parse_args(argv)
    args.started_at = STARTED_AT
    setup_logging()
    try:
        lock = hold_recorder_lock(args)  # noqa: F841 - held while this function runs
        if getattr(args, "handler", None) is not None:
            code: int = args.handler(args)  # a subcommand (export, proxy, ...): its exit status
            return code
        if args.headless:
            return run_headless(args)
        from widgets.application import run_gui

        try:
            return run_gui(args)
        except (DatabaseRefused, AlreadyRecording) as exc:
            print(exc, file=sys.stderr)
            show_refusal(str(exc))
            return EXIT_REFUSED
    except (DatabaseRefused, AlreadyRecording) as exc:  # the message is the whole story: no traceback
        print(exc, file=sys.stderr)
        return EXIT_REFUSED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
