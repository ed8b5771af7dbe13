"""Benchmark `kimi-nb repair --jobs 1` vs `--jobs 4` on 16 broken notebooks against a slow scripted model.

Each notebook has a NameError; the scripted model (a real ScriptedServer over HTTP, routed per notebook by a
marker, in its own process as a real endpoint is) answers with a read-free ``edit_cell`` turn and a short final turn, streamed with a per-chunk delay so
one fix takes about ``--latency`` seconds of model time. With the model as the bottleneck, four notebooks at
once should finish about four times sooner. The run's own report gives kimi-nb's overhead per notebook: the
time a notebook took beyond its kernel (start + execution) and its model requests.

    python bench/bench_repair.py [--notebooks 16] [--latency 8.0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kimi_nb.testing.processes import stop_process

__all__ = ["main"]

REASONING = ("The failing cell uses valuez_{n}, but the first cell defines values_{n}. It is a typo in the name, "
             "not a missing definition, so the smallest fix is to correct the name in the failing cell. ")


def make_corpus(folder: Path, count: int) -> None:
    """``count`` notebooks, each with a misspelt variable in its second cell."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    for n in range(count):
        cells = [
            new_code_cell(f"values_{n} = list(range(10))", id="setup"),
            new_code_cell(f"# bench notebook {n:02d}\nprint(sum(valuez_{n}))", id="total"),
        ]
        meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        nbformat.write(new_notebook(cells=cells, metadata=meta), folder / f"nb{n:02d}.ipynb")


def make_script(path: Path, count: int, latency: float) -> None:
    """Two turns per notebook whose streaming takes ``latency`` seconds in all (8-character chunks)."""
    turns: list[dict[str, Any]] = []
    for n in range(count):
        reasoning = REASONING.format(n=n)
        edit = {"cell_id": "total", "old_text": f"valuez_{n}", "new_text": f"values_{n}"}
        answer = f"Fixed the typo: valuez_{n} is values_{n}."
        chunks = (len(reasoning) + len(json.dumps(edit)) + len(answer)) // 8 + 4
        delay = round(latency / chunks, 4)
        marker = f"bench notebook {n:02d}"
        turns.append({"match": marker, "reasoning": reasoning, "fault": {"delay": delay},
                      "tool_calls": [{"name": "edit_cell", "arguments": edit}]})
        turns.append({"match": marker, "content": answer, "fault": {"delay": delay}})
    path.write_text(json.dumps({"turns": turns}))


@contextmanager
def model_server(script: Path) -> Iterator[str]:
    """The scripted model in its own process, as a real endpoint is (not sharing the CLI's GIL); its base URL."""
    server = subprocess.Popen([sys.executable, "-m", "kimi_nb.cli", "scripted-server", str(script)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if "listening on " not in line:
            raise SystemExit(f"the scripted server did not start: {line!r}")
        yield line.rsplit("listening on ", 1)[1].strip()
    finally:
        stop_process(server)


def repair(folder: Path, script: Path, jobs: int, report: Path) -> float:
    """Wall time of one CLI run (a fresh process, as users run it) against a fresh scripted model process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMI_")}
    with model_server(script) as base_url:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "kimi_nb.cli", "repair", str(folder), "--diff", "--quiet", "--jobs", str(jobs),
             "--base-url", base_url, "--model", "kimi-k2.5", "--report", str(report)],
            env=env, capture_output=True, text=True, check=False,
        )
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"kimi-nb repair --jobs {jobs} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds


def breakdown(report: Path) -> dict[str, float]:
    """Per-notebook medians from a run's report: kernel (start, execution, shutdown), model, and the rest:
    kimi-nb's own overhead (loading, context, tools, applying edits). One-off costs per run (imports, the
    first HTTP connection) land in the first notebook, so the median leaves them out."""
    notebooks = json.loads(report.read_text())["notebooks"]
    failed = [entry["reason"] for entry in notebooks if entry["status"] != "repaired"]
    if failed:
        raise SystemExit(f"not every notebook was repaired: {failed}")
    durations = [entry["durations"] for entry in notebooks]
    return {
        "execute": statistics.median(d["execute_seconds"] for d in durations),
        "model": statistics.median(d["model_seconds"] for d in durations),
        "overhead": statistics.median(d["total_seconds"] - d["execute_seconds"] - d["model_seconds"]
                                      for d in durations),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=16)
    parser.add_argument("--latency", type=float, default=8.0,
                        help="model seconds per fix (default 8: K2.5 thinking through a small fix)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kimi-bench-repair-") as tmp:
        root = Path(tmp)
        corpus = root / "notebooks"
        corpus.mkdir()
        make_corpus(corpus, args.notebooks)
        script = root / "script.json"
        make_script(script, args.notebooks, args.latency)
        warm = root / "warm"
        warm.mkdir()
        make_corpus(warm, 1)
        repair(warm, script, 1, root / "warm.json")  # warm the file cache (imports, kernel) for both runs
        serial = repair(corpus, script, 1, root / "jobs1.json")
        parallel = repair(corpus, script, 4, root / "jobs4.json")
        per_notebook = breakdown(root / "jobs1.json")
    result = {
        "notebooks": args.notebooks,
        "model_latency_s": args.latency,
        "jobs1_s": round(serial, 2),
        "jobs4_s": round(parallel, 2),
        "speedup": round(serial / parallel, 2),
        "kernel_s_per_notebook": round(per_notebook["execute"], 3),
        "model_s_per_notebook": round(per_notebook["model"], 3),
        "overhead_s_per_notebook": round(per_notebook["overhead"], 3),
        "headline": [
            {"label": "repair 16 notebooks: --jobs 4 speed-up over --jobs 1", "value": round(serial / parallel, 2),
             "unit": "x", "target": ">= 3.5"},
            {"label": "repair: kimi-nb overhead per notebook beyond kernel and model", "value":
             round(per_notebook["overhead"], 3), "unit": "s", "target": "< 0.25"},
        ],
    }
    print(f"{args.notebooks} notebooks, model ~{args.latency:g} s per fix")
    print(f"  --jobs 1: {serial:6.2f} s    --jobs 4: {parallel:6.2f} s    speed-up {serial / parallel:.2f}x")
    print(f"  per notebook (jobs 1): kernel {per_notebook['execute']:.2f} s, model {per_notebook['model']:.2f} s, "
          f"kimi-nb overhead {per_notebook['overhead'] * 1000:.0f} ms (medians)")
    return result


if __name__ == "__main__":
    main()
