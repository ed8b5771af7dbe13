"""Time `%load_ext kimi_nb` against `%load_ext jupyter_ai_magics`, each in fresh subprocesses, alternating.

Each repetition starts a new Python process, creates an IPython InteractiveShell, then times only the
`%load_ext` line (what a user waits for in a running kernel). Both extensions run under the same interpreter:
one that can import jupyter_ai_magics (this one, $KIMI_BENCH_PYTHON, or /tmp/jaienv/bin/python, a venv made with
`python -m venv /tmp/jaienv --system-site-packages && /tmp/jaienv/bin/pip install jupyter-ai-magics`).

    python bench/bench_load_ext.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

__all__ = ["main", "time_load_ext"]

EXTENSIONS = ("kimi_nb", "jupyter_ai_magics")
FALLBACK_PYTHON = "/tmp/jaienv/bin/python"
_PROBE = """
import json, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
start = time.perf_counter()
ip.run_line_magic("load_ext", {name!r})
elapsed = time.perf_counter() - start
assert {magic!r} in ip.magics_manager.magics["cell"], "the extension did not register its cell magic"
print(json.dumps(elapsed))
"""
_MAGICS = {"kimi_nb": "kimi", "jupyter_ai_magics": "ai"}


def time_load_ext(python: str, name: str) -> float:
    """Seconds `%load_ext name` takes in a fresh process of ``python``."""
    code = _PROBE.format(name=name, magic=_MAGICS[name])
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def _python_with_jupyter_ai() -> str | None:
    candidates = [os.environ.get("KIMI_BENCH_PYTHON", ""), sys.executable, FALLBACK_PYTHON]
    for python in filter(None, candidates):
        if os.path.exists(python) and subprocess.run([python, "-c", "import jupyter_ai_magics"],
                                                     capture_output=True, check=False).returncode == 0:
            return python
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print medians and the ratio, and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="Fresh processes per extension (default 7).")
    args = parser.parse_args(argv)
    python = _python_with_jupyter_ai()
    if python is None:
        print("jupyter_ai_magics is not installed: pip install jupyter-ai-magics (or into a separate venv: "
              "python -m venv /tmp/jaienv --system-site-packages && /tmp/jaienv/bin/pip install jupyter-ai-magics)")
        python = sys.executable
        names: tuple[str, ...] = ("kimi_nb",)
    else:
        names = EXTENSIONS
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name in names:  # alternate, so drifting machine load hits both alike
            times[name].append(time_load_ext(python, name))
    result: dict[str, Any] = {"python": python, "repeat": args.repeat,
                              "median_seconds": {name: statistics.median(t) for name, t in times.items()}}
    for name, median in result["median_seconds"].items():
        print(f"%load_ext {name:<18} median {median * 1000:8.1f} ms over {args.repeat} fresh processes")
    if len(names) == 2:
        ratio = result["median_seconds"]["jupyter_ai_magics"] / result["median_seconds"]["kimi_nb"]
        result["ratio"] = ratio
        result["headline"] = {"label": "%load_ext kimi_nb speed-up vs jupyter_ai_magics", "value": ratio,
                              "unit": "x", "target": ">= 10"}
        print(f"kimi_nb loads {ratio:.1f}x faster than jupyter_ai_magics (target: >= 10x)")
    else:  # 10x faster than jupyter_ai_magics' 0.85 s measured elsewhere
        result["headline"] = {"label": "%load_ext kimi_nb", "value": result["median_seconds"]["kimi_nb"],
                              "unit": "s", "target": "< 0.085"}
    return result


if __name__ == "__main__":
    main()
