"""Start-up cost of the kimi_nb server extension: JupyterLab launch until /api/status answers, enabled vs disabled.

Each repetition launches a fresh server process twice, once with ``kimi_nb`` enabled and once with it
disabled (alternating which goes first), on 127.0.0.1 and a free port, no browser, an isolated Jupyter config
and runtime dir and no model endpoint configured. It polls ``/api/status`` with the server's token and
reports the median of each mode, their difference (target: under 0.1 s) and their ratio.

    python bench/bench_server_startup.py [--repeat N] [--app lab|server]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kimi_nb.testing.processes import stop_process

__all__ = ["TARGET_SECONDS", "main", "time_extension_import", "time_startup"]

TARGET_SECONDS = 0.1
APPS = {"lab": "jupyterlab", "server": "jupyter_server"}
_IMPORT_PROBE = """
import time
import jupyter_server.serverapp, jupyter_server.extension.application
start = time.perf_counter()
import kimi_nb
kimi_nb._jupyter_server_extension_points()
print(time.perf_counter() - start)
"""
_ENV_DROPPED = ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str) -> int | None:
    """The HTTP status of a GET, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_startup(app: str, *, enabled: bool, workdir: Path, timeout: float = 120.0) -> tuple[float, float | None]:
    """Wall-clock seconds from launching ``python -m <app module>`` until its /api/status answers 200, and the
    CPU seconds the server used by then (less disturbed by other load on the machine than wall-clock time).

    Afterwards checks that the kimi-nb routes exist exactly when the extension is enabled."""
    config = workdir / f"kimi_nb_{'on' if enabled else 'off'}_config.py"
    config.write_text(f"c.ServerApp.jpserver_extensions = {{'kimi_nb': {enabled}}}\n")
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", APPS[app], "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--config={config}",
               f"--ServerApp.root_dir={workdir}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    env.update(JUPYTER_CONFIG_DIR=str(workdir / "config"), JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
               JUPYTER_DATA_DIR=str(workdir / "data"))
    server = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _status(f"{server}/api/status?token={token}") != 200:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[:3])} exited with {process.returncode} before answering")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"{app} did not answer within {timeout:.0f} s")
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - start, _cpu_seconds(process.pid)
        kimi = _status(f"{server}/kimi-nb/api/memory?token={token}")
        if kimi != (200 if enabled else 404):
            raise RuntimeError(f"kimi-nb routes answered {kimi} with the extension {'en' if enabled else 'dis'}abled")
        return elapsed, cpu
    finally:
        stop_process(process)


def time_extension_import() -> float:
    """Seconds to import the extension's module in a fresh process that already imported Jupyter Server: the
    low-noise part of the start-up cost (the launches above also include linking and adding the routes)."""
    done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the medians, their difference and ratio, and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="Launches per mode (default 7).")
    parser.add_argument("--app", choices=sorted(APPS), default="lab", help="JupyterLab (default) or plain Jupyter Server.")
    args = parser.parse_args(argv)
    walls: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="kimi-nb-bench-") as tmp:
        workdir = Path(tmp)
        time_startup(args.app, enabled=True, workdir=workdir)  # warm the disk cache for both modes
        for repetition in range(args.repeat):
            for enabled in (True, False) if repetition % 2 == 0 else (False, True):
                wall, cpu = time_startup(args.app, enabled=enabled, workdir=workdir)
                walls[enabled].append(wall)
                cpus[enabled].extend([cpu] if cpu is not None else [])
    imports = statistics.median(time_extension_import() for _ in range(args.repeat))
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    cpu_on, cpu_off = _median(cpus[True]), _median(cpus[False])
    cpu_added = round(cpu_on - cpu_off, 3) if cpu_on is not None and cpu_off is not None else None
    name = APPS[args.app]
    result: dict[str, Any] = {
        "app": args.app,
        "repeat": args.repeat,
        "enabled_median_s": round(on, 4),
        "disabled_median_s": round(off, 4),
        "difference_s": round(on - off, 4),
        "ratio": round(on / off, 4),
        "target_s": TARGET_SECONDS,
        "within_target": on - off < TARGET_SECONDS,
        "cpu_enabled_median_s": cpu_on,
        "cpu_disabled_median_s": cpu_off,
        "cpu_difference_s": cpu_added,
        "extension_import_s": round(imports, 4),
        "enabled_s": [round(t, 4) for t in walls[True]],
        "disabled_s": [round(t, 4) for t in walls[False]],
        "headline": [
            {"label": f"{name} start-up added by kimi_nb (median wall)", "value": round(on - off, 4), "unit": "s",
             "target": f"< {TARGET_SECONDS}"},
            {"label": f"{name} start-up CPU time added by kimi_nb (median)", "value": cpu_added, "unit": "s",
             "target": f"< {TARGET_SECONDS}"},
        ],
    }
    print(f"{name} start-up until /api/status answers, median of {args.repeat} alternating launches per mode:")
    print(f"  kimi_nb enabled  {on:.3f} s   disabled {off:.3f} s")
    print(f"  difference {on - off:+.3f} s (target < {TARGET_SECONDS} s), ratio {on / off:.3f}")
    if cpu_added is not None:
        print(f"  server CPU time by then: enabled {cpu_on:.2f} s, disabled {cpu_off:.2f} s, added {cpu_added:+.2f} s")
    print(f"  importing the extension alone: {imports * 1000:.1f} ms (median of {args.repeat} fresh processes)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
