"""Run the metering proxy without a window, recording every request (and the usual collectors).

    main.py proxy                                   # every server found: Ollama :11434 → :11435...
    main.py proxy --upstream http://127.0.0.1:8000 --listen 8001
    main.py --db run.db proxy --upstream http://127.0.0.1:11434 --listen 11435 --include-usage

Point clients at the proxy's address instead of the server's (OLLAMA_HOST=127.0.0.1:11435, or
an OpenAI base_url of http://127.0.0.1:8001/v1). Ctrl-C stops; everything is written first.
The proxy listens on 127.0.0.1 unless --listen names another address.
"""
from __future__ import annotations

import argparse
import dataclasses

from app.config import ProxyRoute, load_settings, parse_listen
from app.proxy.options import port_problem
from app.server_kinds import kind_ids
from app.server_names import host_port

SCAN_WAIT_S = 15.0  # the first scan probes every default port at once, ~1 s each


def listen_arg(text: str) -> tuple[str, int]:
    parsed = parse_listen(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not a port or HOST:PORT: {text!r}")
    if problem := port_problem(parsed[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", metavar="URL",
                        help="the server to put the proxy in front of (default: the configured routes)")
    parser.add_argument("--listen", type=listen_arg, metavar="[HOST:]PORT",
                        help="where the proxy listens (with --upstream; default: the upstream's port + 1)")
    parser.add_argument("--kind", default="auto", choices=("auto", *kind_ids()),
                        help="the server's kind, for the records' server label (default: from the port)")
    parser.add_argument("--include-usage", action="store_true",
                        help="ask OpenAI-compatible servers for exact token usage on streams "
                             "(the extra chunk is removed before the client sees it)")
    parser.add_argument("--store-content", action="store_true",
                        help="also record prompt and response text (capped; off by default)")


def run(args: argparse.Namespace) -> int:
    from app.runtime import EXIT_STOPPED, Runtime

    settings, problems = load_settings()
    proxy = settings.proxy
    if args.upstream:
        host, port = args.listen or ("127.0.0.1", host_port(args.upstream)[1] + 1)
        proxy.routes = [ProxyRoute(upstream=args.upstream.rstrip("/"), listen_port=port, listen_host=host,
                                   kind=args.kind)]
    settings.proxy = dataclasses.replace(
        proxy, enabled=True, include_usage=proxy.include_usage or args.include_usage,
        store_content=proxy.store_content or args.store_content, routes_only=bool(args.upstream))
    runtime = Runtime.create(args.db, settings=settings, session_name=args.session_name or "proxy",
                             serve_metrics=args.serve_metrics)
    runtime.problems.extend(problems)
    runtime.start()
    if runtime.proxies is not None and runtime.discovery is not None and not args.upstream:
        runtime.discovery.scanned.wait(SCAN_WAIT_S)  # the routes are the servers it finds
        runtime.proxies.update()
    statuses = runtime.proxies.status() if runtime.proxies is not None else []
    if not statuses:
        print("llmmon proxy: no LLM server found yet; llmmon keeps looking and starts a proxy in front "
              "of each server it finds, on the server's port + 1", flush=True)
        return EXIT_STOPPED if runtime.record_until_signalled("llmmon proxy") else 0
    for status in statuses:
        if status.running:
            print(f"llmmon proxy: {status.listen} → {status.upstream} ({status.name}); "
                  f"point your clients at {status.listen}", flush=True)
        else:
            print(f"llmmon proxy: {status.upstream}: {status.error}", flush=True)
    if not any(s.running for s in statuses):
        runtime.stop()
        return 1
    return EXIT_STOPPED if runtime.record_until_signalled("llmmon proxy") else 0

