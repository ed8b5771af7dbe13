"""`python -m bench`: run every bench/bench_*.py in a fresh process and print one table of headline results.

Each module's ``main()`` returns a dict. Its headline comes from a ``"headline"`` key when the module gives one
(``{"label", "value", "unit", "target"}`` or a list of them; ``target`` like ``"<= 1.5"``), else from the
known keys below. A bench that fails or runs out of time is shown as failed and the run goes on. All results
(whole dicts, headlines, seconds taken) go to ``bench/results/latest.json`` and a small chart to
``bench/results/latest.png``.

    python -m bench [--only NAME ...] [--timeout SECONDS] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchRun", "Headline", "discover", "headlines", "main", "plot", "render_table", "run_bench"]

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 900.0
_TARGET = re.compile(r"^\s*(<=|>=|<|>|==)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")

#: Headlines of modules that return no "headline" key: module -> (result key, label, unit, target).
KNOWN: dict[str, tuple[str, str, str, str]] = {
    "bench_stream_parser": ("ratio_1MB_over_10KB", "stream parser cost/char, 1 MB vs 10 KB", "x", "<= 1.5"),
}


@dataclass(frozen=True)
class Headline:
    """One number of the table: what it measures, its value and the target it should meet."""

    label: str
    value: float | None
    unit: str = ""
    target: str = ""

    @property
    def met(self) -> bool | None:
        """Whether ``value`` meets ``target`` (None when there is no comparable target or value)."""
        match = _TARGET.match(self.target)
        if match is None or self.value is None or math.isnan(self.value):
            return None
        op, bound = match.group(1), float(match.group(2))
        return {"<=": self.value <= bound, ">=": self.value >= bound, "<": self.value < bound,
                ">": self.value > bound, "==": self.value == bound}[op]


@dataclass(frozen=True)
class BenchRun:
    """The outcome of one bench module: its result dict, or the one-line reason it failed."""

    name: str
    seconds: float
    result: dict[str, Any] | None = None
    error: str | None = None
    output: str = ""


def discover(directory: Path = HERE) -> list[str]:
    """Module names of every ``bench_*.py`` in ``directory``, sorted."""
    return sorted(path.stem for path in directory.glob("bench_*.py"))


def run_bench(name: str, *, timeout: float = DEFAULT_TIMEOUT) -> BenchRun:
    """Run ``bench.<name>.main()`` in a fresh Python process, at most ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="kimi-nb-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench", "--child", name, str(out)]
        start = time.perf_counter()
        # its own session, so a timeout also stops what the bench started (servers, kernels)
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=HERE.parent, env={**os.environ, "MPLBACKEND": "Agg"}, start_new_session=True)
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
            return BenchRun(name, time.perf_counter() - start, error=f"timed out after {timeout:g} s",
                            output=stdout + stderr)
        seconds = time.perf_counter() - start
        output = stdout + stderr
        if child.returncode != 0 or not out.exists():
            return BenchRun(name, seconds, error=_last_line(stderr) or f"exit status {child.returncode}",
                            output=output)
        result = json.loads(out.read_text(encoding="utf-8"))
    if not isinstance(result, dict):
        return BenchRun(name, seconds, error=f"main() returned {type(result).__name__}, not a dict", output=output)
    return BenchRun(name, seconds, result=result, output=output)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _child(name: str, out: str) -> int:
    """Inside the fresh process: import the module, run ``main()`` with no arguments, write its dict."""
    import importlib

    module = importlib.import_module(f"bench.{name}")
    sys.argv = [module.__file__ or name]  # argparse-based main(argv=None) must see no options
    result = module.main()
    Path(out).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


def headlines(run: BenchRun) -> list[Headline]:
    """The headline numbers of one run (empty for a failed one)."""
    if run.result is None:
        return []
    given = run.result.get("headline")
    if given is not None:
        items = given if isinstance(given, list) else [given]
        return [Headline(str(h.get("label", run.name)), _number(h.get("value")), str(h.get("unit", "")),
                         str(h.get("target", ""))) for h in items if isinstance(h, dict)]
    if run.name in KNOWN:
        key, label, unit, target = KNOWN[run.name]
        return [Headline(label, _number(run.result.get(key)), unit, target)]
    ratios = [key for key, value in run.result.items() if "ratio" in key and _number(value) is not None]
    return [Headline(f"{run.name}: {key}", _number(run.result[key]), "x") for key in ratios[:1]]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 10_000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


def render_table(runs: list[BenchRun]) -> str:
    """The table printed at the end: one row per headline, failed benches included."""
    rows = [("bench", "headline", "value", "target", "")]
    for run in runs:
        if run.error is not None:
            rows.append((run.name, "FAILED: " + run.error, "-", "-", "✗"))
            continue
        found = headlines(run) or [Headline("(no headline in the result)", None)]
        for item in found:
            mark = {True: "✓", False: "✗", None: ""}[item.met]
            rows.append((run.name, item.label, f"{_format(item.value)} {item.unit}".strip(), item.target or "-", mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot(runs: list[BenchRun], path: Path) -> None:
    """A small PNG: one horizontal bar per headline with its target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(run.name, h) for run in runs for h in headlines(run) if h.value is not None]
    fig, axes = plt.subplots(max(1, len(items)), 1, figsize=(7, 0.6 * max(1, len(items)) + 0.5), squeeze=False)
    for ax, (name, item) in zip(axes[:, 0], items):
        colour = {True: "#2e7d32", False: "#c62828", None: "#546e7a"}[item.met]
        ax.barh([0], [item.value], color=colour, height=0.6)
        match = _TARGET.match(item.target)
        limit = max(item.value, float(match.group(2)) if match else 0.0) * 1.25 or 1.0
        if match:
            ax.axvline(float(match.group(2)), color="black", linestyle="--", linewidth=1)
        ax.set_xlim(min(0.0, item.value * 1.25), limit)
        ax.set_yticks([])
        ax.set_title(f"{item.label}: {_format(item.value)} {item.unit}  (target {item.target or '-'})",
                     fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    if not items:
        axes[0, 0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benches, print the table, write the JSON and PNG. Exit status 1 when a bench failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Run only these (bench_x or x).")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"Seconds each bench may take (default {DEFAULT_TIMEOUT:g}).")
    parser.add_argument("--output", type=Path, default=HERE / "results", help="Folder for latest.json/.png.")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(*args.child)
    names = discover()
    if args.only:
        wanted = {name if name.startswith("bench_") else f"bench_{name}" for name in args.only}
        unknown = sorted(wanted - set(names))
        if unknown:
            parser.error(f"no bench named {unknown[0]} (have: {', '.join(names)})")
        names = [name for name in names if name in wanted]
    runs = []
    for name in names:
        print(f"running {name} ...", flush=True)
        run = run_bench(name, timeout=args.timeout)
        print(f"  {'failed: ' + run.error if run.error else 'done'} ({run.seconds:.1f} s)", flush=True)
        runs.append(run)
    table = render_table(runs)
    print()
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "benches": {run.name: {"seconds": round(run.seconds, 2), "error": run.error, "result": run.result,
                               "headlines": [asdict(h) | {"met": h.met} for h in headlines(run)],
                               **({"output_tail": run.output[-2000:]} if run.error else {})} for run in runs},
        "table": table,
    }
    (args.output / "latest.json").write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    plot(runs, args.output / "latest.png")
    print(f"\nwrote {args.output / 'latest.json'} and {args.output / 'latest.png'}")
    return 1 if any(run.error for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
