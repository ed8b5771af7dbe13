"""A stand-in `vllm` executable for launcher tests: accepts `vllm serve` arguments, logs like vLLM, serves a script.

``python -m kimi_nb.testing.fake_vllm serve MODEL --port P [vllm options] [--script S] [--crash] [--never-healthy]
[--startup-delay SECONDS] [--workers N]``. The behaviour can also come from the environment (for launchers that only pass vLLM's
own arguments): ``KIMI_FAKE_VLLM_SCRIPT`` (a script path), ``KIMI_FAKE_VLLM_MODE`` (``crash`` or
``never-healthy``), ``KIMI_FAKE_VLLM_STARTUP_DELAY`` (seconds answering 503 on /health first). Without a script it
answers with the offline demo responder. ``--workers N`` starts N idle child processes (as vLLM starts engine-core
and tensor-parallel workers) and logs their pids, so tests can check that a launcher stops the whole group. The model is served under MODEL (or ``--served-model-name``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

__all__ = ["main"]


def _log(level: str, message: str) -> None:
    print(f"{level} {time.strftime('%m-%d %H:%M:%S')} [api_server.py] {message}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm", description="kimi-nb's stand-in for `vllm serve`.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--served-model-name", default=None)
    serve.add_argument("--script", default=os.environ.get("KIMI_FAKE_VLLM_SCRIPT") or None)
    mode = os.environ.get("KIMI_FAKE_VLLM_MODE", "")
    serve.add_argument("--crash", action="store_true", default=mode == "crash")
    serve.add_argument("--never-healthy", action="store_true", default=mode == "never-healthy")
    serve.add_argument("--startup-delay", type=float,
                       default=float(os.environ.get("KIMI_FAKE_VLLM_STARTUP_DELAY") or 0))
    serve.add_argument("--workers", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, other = _parser().parse_known_args(argv)
    _log("INFO", f"vLLM API server version 0.0.0+kimi-nb-stand-in; model {args.model!r}")
    _log("INFO", f"non-default args: tensor_parallel_size={args.tensor_parallel_size} {' '.join(other)}".strip())
    for _ in range(args.workers):
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        _log("INFO", f"Started engine core worker pid={worker.pid}")
    if args.crash:
        _log("ERROR", "RuntimeError: No CUDA GPUs are available (stand-in crash)")
        return 1
    from kimi_nb.testing.demo import demo_responder
    from kimi_nb.testing.server import ScriptedServer

    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    models = (args.served_model_name or args.model,)
    server = ScriptedServer(args.script, host=host, port=args.port, models=models) if args.script else \
        ScriptedServer(responder=demo_responder, host=host, port=args.port, models=models)
    server.healthy = False
    with server:
        _log("INFO", f"Starting vLLM API server on http://{host}:{server.port}")
        if not args.never_healthy:
            time.sleep(args.startup_delay)
            server.healthy = True
            _log("INFO", "Application startup complete.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            _log("INFO", "Shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
