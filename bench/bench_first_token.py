"""Benchmark: first-token latency through the sidebar's chat endpoint vs the raw engine, same ScriptedServer.

Three processes: a ScriptedServer (``kimi-nb scripted-server``), a real Jupyter Server with the kimi_nb
extension configured for it, and this one, the client. Each round times, alternating which goes first, (a)
``RemoteEngine.stream`` until its first visible token (reasoning or text) and (b) ``POST
{base_url}kimi-nb/api/chat`` until its first ``reasoning`` or ``text`` line. The sidebar's overhead is the
median of (b) minus the median of (a); its first chat request (lazy imports of the agent and context) is
reported separately.
    python bench/bench_first_token.py [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from kimi_nb.engine import RemoteEngine
from kimi_nb.protocol import ReasoningDelta, TextDelta
from kimi_nb.testing.processes import stop_process

__all__ = ["TARGET_MS", "jupyter_server", "main"]

TARGET_MS = 50.0
PROMPT = "Say hello."
SCRIPT = {"repeat": True, "turns": [{"reasoning": "The user greets me; a short greeting will do.",
                                     "content": "Hello! The scripted engine answers at once.", "chunk": 4}]}
NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"id": "c1", "cell_type": "code", "metadata": {}, "execution_count": 1, "source": "x = 41 + 1", "outputs": []}]}
_ENV_DROPPED = ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED")
KEY = "sk-bench-not-a-real-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _child(command: list[str], *, ready: str, log: Path, env: dict[str, str] | None = None,
           headers: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[None]:
    """Run ``command`` until ``ready`` answers HTTP 200, then yield; stop it afterwards. Output goes to ``log``."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{' '.join(command[:3])} exited with {process.returncode}: see {log}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready, headers=headers, timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(command[:3])} did not answer within {timeout:.0f} s")
                time.sleep(0.05)
            yield
        finally:
            stop_process(process)


@contextlib.contextmanager
def jupyter_server(base_url: str, workdir: Path, *, api_key: str = KEY, config: str = "",
                   timeout: float = 120.0) -> Iterator[tuple[str, str]]:
    """A Jupyter Server child process with kimi_nb enabled, talking to ``base_url`` with ``api_key`` (from the
    environment, as users set it), its root and Jupyter dirs in ``workdir``, its log in ``workdir/server.log``;
    ``config`` adds lines to its config file. Yields (url, token) once the sidebar's status route answers."""
    config_file = workdir / "kimi_server_config.py"
    config_file.write_text("c.ServerApp.jpserver_extensions = {'kimi_nb': True}\n"
                           f"c.KimiNB.memory_dir = {str(workdir / 'memory')!r}\n{config}\n")
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--config={config_file}",
               f"--ServerApp.root_dir={workdir}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    env.update(KIMI_BASE_URL=base_url, KIMI_API_KEY=api_key, JUPYTER_CONFIG_DIR=str(workdir / "config"),
               JUPYTER_RUNTIME_DIR=str(workdir / "runtime"), JUPYTER_DATA_DIR=str(workdir / "data"))
    url = f"http://127.0.0.1:{port}"
    with _child(command, ready=f"{url}/kimi-nb/api/status", headers={"Authorization": f"token {token}"},
                log=workdir / "server.log", env=env, timeout=timeout):
        yield url, token


@contextlib.contextmanager
def scripted_server(script: dict[str, Any], workdir: Path) -> Iterator[str]:
    """``kimi-nb scripted-server`` in its own process (so it competes with neither client for the GIL);
    yields its base URL."""
    path = workdir / "script.json"
    path.write_text(json.dumps(script))
    port = _free_port()
    command = [sys.executable, "-m", "kimi_nb.cli", "scripted-server", str(path), f"--port={port}"]
    with _child(command, ready=f"http://127.0.0.1:{port}/health", log=workdir / "scripted.log"):
        yield f"http://127.0.0.1:{port}/v1"


async def _engine_first_token(engine: RemoteEngine) -> float:
    start = time.perf_counter()
    first = None
    async for event in engine.stream([{"role": "user", "content": PROMPT}]):
        if first is None and isinstance(event, (ReasoningDelta, TextDelta)) and event.text:
            first = time.perf_counter() - start
    assert first is not None, "the engine streamed nothing visible"
    return first


async def _sidebar_first_token(client: httpx.AsyncClient, url: str) -> float:
    body = {"prompt": PROMPT, "notebook": NOTEBOOK, "path": "bench.ipynb"}
    start = time.perf_counter()
    first = None
    async with client.stream("POST", f"{url}/kimi-nb/api/chat", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"chat answered HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            event = json.loads(line)
            if event["type"] == "error":
                raise RuntimeError(f"chat failed: {event['message']}")
            if first is None and event["type"] in ("reasoning", "text") and event["text"]:
                first = time.perf_counter() - start
    assert first is not None, "the sidebar streamed nothing visible"
    return first


async def _measure(base_url: str, url: str, token: str, rounds: int) -> dict[str, Any]:
    engine = RemoteEngine(base_url, api_key=KEY, model="kimi-k2.5", max_retries=0)
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        try:
            cold = await _sidebar_first_token(client, url)
            await _engine_first_token(engine)  # warm the client's connection pool
            times: dict[str, list[float]] = {"engine": [], "sidebar": []}
            for round_ in range(rounds):
                order = ("engine", "sidebar") if round_ % 2 == 0 else ("sidebar", "engine")
                for which in order:
                    measure = _engine_first_token(engine) if which == "engine" else _sidebar_first_token(client, url)
                    times[which].append(await measure)
        finally:
            await engine.aclose()
    return {"cold": cold, **times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the medians and the overhead, and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="Alternating rounds (default 25).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kimi-nb-bench-") as tmp, scripted_server(SCRIPT, Path(tmp)) as base_url, \
            jupyter_server(base_url, Path(tmp)) as (url, token):
        times = anyio.run(_measure, base_url, url, token, args.rounds)
    engine_ms = statistics.median(times["engine"]) * 1000
    sidebar_ms = statistics.median(times["sidebar"]) * 1000
    overhead = sidebar_ms - engine_ms
    result = {
        "rounds": args.rounds,
        "engine_median_ms": round(engine_ms, 2),
        "sidebar_median_ms": round(sidebar_ms, 2),
        "overhead_ms": round(overhead, 2),
        "ratio": round(sidebar_ms / engine_ms, 3),
        "sidebar_cold_ms": round(times["cold"] * 1000, 2),
        "headline": {"label": "sidebar first-token overhead over the raw engine", "value": round(overhead, 2),
                     "unit": "ms", "target": f"< {TARGET_MS:g}"},
    }
    print(f"first token, median of {args.rounds} alternating rounds against one ScriptedServer:")
    print(f"  raw engine (RemoteEngine.stream)  {engine_ms:7.1f} ms")
    print(f"  sidebar (POST kimi-nb/api/chat)   {sidebar_ms:7.1f} ms   (first chat request: {times['cold'] * 1000:.0f} ms)")
    print(f"  overhead {overhead:+.1f} ms (target < {TARGET_MS:g} ms), ratio {sidebar_ms / engine_ms:.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
