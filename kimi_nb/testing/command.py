"""`kimi-nb scripted-server SCRIPT.json [--port N] [--host H] [--demo]`: serve a script until Ctrl+C."""

from __future__ import annotations

import argparse
import sys
import threading

from kimi_nb.errors import ScriptError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", nargs="?", help="JSON script: {\"turns\": [...]} answered in order")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--demo", action="store_true",
                        help="answer every request with the offline demo responder instead of a script")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")


def run(args: argparse.Namespace) -> int:
    """Start the server, print its base URL, block until interrupted."""
    from kimi_nb.testing.demo import demo_responder
    from kimi_nb.testing.server import ScriptedServer

    if bool(args.script) == bool(args.demo):
        raise ScriptError("give either a SCRIPT.json or --demo")
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    server = ScriptedServer(args.script, host=args.host, port=args.port, log=log) if args.script else \
        ScriptedServer(responder=demo_responder, host=args.host, port=args.port, log=log)
    with server:
        print(f"kimi-nb scripted server listening on {server.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("kimi-nb scripted server stopped", flush=True)
    return 0
