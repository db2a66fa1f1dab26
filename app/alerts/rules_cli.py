"""Write llmmon's alert rules (the shipped ones and yours) for Prometheus.

    main.py rules --prometheus                      # the rule file on stdout
    main.py rules --prometheus llmmon-rules.yml     # into a file
    main.py rules --prometheus out.yml --rules my_alert_rules.toml

Reads your alert_rules.toml (the shipped defaults when you have none yet) and writes a
Prometheus rule file: load it with `rule_files:` in prometheus.yml, check it with
`promtool check rules FILE`. Rules PromQL cannot express are written as comments saying why.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.alerts.prometheus_rules import convert, rule_file_text
from app.alerts.rules import DEFAULT_RULES_PATH, load_rules, user_rules_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", nargs="?", const="-", metavar="FILE",
                        help="write a Prometheus rule file (YAML) to FILE, or to stdout")
    parser.add_argument("--rules", metavar="PATH", type=Path,
                        help="the llmmon rule file to read (default: yours, else the shipped defaults)")


def run(args: argparse.Namespace) -> int:
    if args.prometheus is None:
        print("llmmon rules: say which format to write: --prometheus [FILE]", file=sys.stderr)
        return 2
    path = args.rules or (user_rules_path() if user_rules_path().exists() else DEFAULT_RULES_PATH)
    rule_file = load_rules(path)  # its problems are logged (on stderr)
    if not rule_file.rules and rule_file.problems:
        return 1
    text = rule_file_text(rule_file.rules, str(path))
    if args.prometheus == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(args.prometheus).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"llmmon rules: cannot write {args.prometheus}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    written = convert(rule_file.rules)
    skipped = [w for w in written if w.skipped]
    print(f"llmmon rules: {len(written) - len(skipped)} rules written from {path}"
          + (f"; as comments: {', '.join(f'{w.rule.name} ({w.skipped})' for w in skipped)}" if skipped else ""),
          file=sys.stderr)
    return 0
