"""Benchmark: prompt tokens sent per fix by kimi-nb's budgeted context vs sending the whole notebook.

A realistic 40-cell notebook (data loading, tables, training logs with progress bars, three real matplotlib
PNGs, warnings) fails in cell 31 with an IPython traceback through library frames. kimi-nb's fix runs the
real core against a ScriptedServer: ``context.build`` (default 24k budget), then ``run_agent`` with the model
reading one more cell (where the misspelt name was defined), proposing an ``edit_cell``, and answering:
three requests, each estimated as the server received it (messages + tool declarations). The naive approach
sends one request with every cell's source and full outputs as text (what "chat with your notebook" tools
do: text as stored in the file, ANSI codes and progress-bar updates included, figures left out), or the raw
.ipynb JSON (figures as base64). Estimates use ``kimi_nb.context.estimate_tokens`` for both sides; the uncached
figure counts, for each request after the first, only what is not a prefix of the previous one.

    python bench/bench_context_tokens.py
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import anyio
import nbformat

from kimi_nb.agent import run_agent
from kimi_nb.context import (
    SYSTEM_PROMPT,
    ContextRequest,
    ErrorInfo,
    build,
    estimate_text_tokens,
    estimate_tokens,
)
from kimi_nb.engine import RemoteEngine
from kimi_nb.notebook import NotebookSnapshot, SnapshotNotebook, snapshot_from_json
from kimi_nb.testing import ScriptedServer
from kimi_nb.tools import Toolbox

__all__ = ["kimi_fix_requests", "main", "naive_messages", "realistic_notebook"]

FAILING = 31
PROMPT = "This cell fails. Please fix it."


def _png(seed: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=72)
    ax.plot(rng.normal(size=(300, 3)).cumsum(axis=0))
    ax.set_title(f"figure {seed}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(rows: int, seed: int) -> str:
    header = "       date  store  product   units   price   revenue  returned"
    lines = [header] + [
        f"{i:<4} 2024-{1 + (i + seed) % 12:02d}-{1 + i % 28:02d}  S{(i * 7 + seed) % 40:03d}  P{(i * 13) % 900:04d}"
        f"  {(i * 31 + seed) % 97:>6}  {((i * 17) % 5000) / 100:>6.2f}  {((i * 53) % 90000) / 10:>8.1f}  {i % 3 == 0}"
        for i in range(rows)
    ]
    return "\n".join(lines) + f"\n\n[{rows * 250} rows x 7 columns]"


def _training_log(epochs: int) -> str:
    out = []
    for epoch in range(epochs):
        bars = "".join(f"\r{p:3d}%|{'#' * (p // 10):<10}| {p * 4}/400 [00:{p // 5:02d}<00:20]" for p in range(0, 101, 5))
        out.append(f"Epoch {epoch + 1}/{epochs}\n{bars}\nloss={1 / (epoch + 1):.4f} val_loss={1.1 / (epoch + 1):.4f} "
                   f"acc={0.5 + epoch / (2 * epochs):.4f}\n")
    return "".join(out)


def _traceback() -> list[str]:
    frames = [
        "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
        "\x1b[0;31mKeyError\x1b[0m                                  Traceback (most recent call last)",
        ("Cell \x1b[0;32mIn[31], line 2\x1b[0m\n\x1b[1;32m      1\x1b[0m features \x1b[38;5;241m=\x1b[39m build_features(sales)\n"
         "\x1b[0;32m----> 2\x1b[0m model_input \x1b[38;5;241m=\x1b[39m features[\x1b[38;5;124m'revenue_per_unitt'\x1b[39m]\n"),
    ]
    for i, name in enumerate(("frame.py:4102", "indexes/base.py:3812", "indexes/base.py:3805", "_libs/index.pyx:167",
                              "_libs/index.pyx:196", "_libs/hashtable_class_helper.pxi:7081")):
        frames.append(
            f"File \x1b[0;32m/opt/conda/lib/python3.11/site-packages/pandas/core/{name}\x1b[0m, in \x1b[0;36mget_loc"
            f"\x1b[0;34m(self, key)\x1b[0m\n" + "".join(f"\x1b[1;32m   {3800 + i * 10 + k}\x1b[0m     line {k} of library code"
                                                        f" that nobody needs to read\n" for k in range(8))
        )
    frames.append("\x1b[0;31mKeyError\x1b[0m: 'revenue_per_unitt'")
    return frames


def realistic_notebook() -> dict[str, Any]:
    """A 40-cell analysis notebook as nbformat JSON, failing at cell FAILING."""
    v4 = nbformat.v4
    cells: list[Any] = []
    figures = iter(_png(seed) for seed in range(3))
    for i in range(40):
        count = i + 1
        if i % 8 == 0:
            cells.append(v4.new_markdown_cell(f"## Part {i // 8 + 1}\nNotes on this part of the analysis, with the "
                                              "assumptions we made and what the next cells compute.", id=f"c{i:02d}"))
            continue
        if i == 3:
            source = "sales = load_sales('data/sales_2024.parquet')\nsales['revenue_per_unit'] = sales.revenue / sales.units\nsales.head(40)"
            outputs = [v4.new_output("execute_result", data={"text/plain": _table(40, i)}, execution_count=count)]
        elif i == FAILING:
            source = "features = build_features(sales)\nmodel_input = features['revenue_per_unitt']\nmodel_input.describe()"
            outputs = [v4.new_output("error", ename="KeyError", evalue="'revenue_per_unitt'", traceback=_traceback())]
        elif i in (10, 20, 30):
            source = f"fig, ax = plt.subplots()\nax.plot(series_{i})\nax.set_title('trend {i}')\nplt.show()"
            outputs = [v4.new_output("display_data", data={"image/png": next(figures),
                                                           "text/plain": "<Figure size 640x480 with 1 Axes>"})]
        elif i % 6 == 5:
            source = f"history_{i} = train(model, train_ds, val_ds, epochs=12)\nhistory_{i}.summary()"
            outputs = [v4.new_output("stream", name="stdout", text=_training_log(12)),
                       v4.new_output("stream", name="stderr", text="UserWarning: The given NumPy array is not "
                                     "writable, and PyTorch does not support non-writable tensors.\n" * 3)]
        else:
            source = (f"# step {i}: aggregate and inspect\nsummary_{i} = sales.groupby(['store', 'product'])"
                      f".agg(units=('units', 'sum'), revenue=('revenue', 'sum'))\nsummary_{i}.describe()")
            outputs = [v4.new_output("execute_result", data={"text/plain": _table(12, i)}, execution_count=count)]
        cells.append(v4.new_code_cell(source, id=f"c{i:02d}", execution_count=count, outputs=outputs))
    nb = v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
    return json.loads(nbformat.writes(nb))


def _raw_output(output: dict[str, Any]) -> str:
    """An output's text as stored in the file (ANSI codes and progress-bar updates included)."""
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback") or ())
    if output.get("output_type") == "stream":
        return "".join(output.get("text") or "")
    return "".join((output.get("data") or {}).get("text/plain") or "")


def naive_messages(nb: dict[str, Any], snapshot: NotebookSnapshot, *, raw_json: bool = False) -> list[dict[str, Any]]:
    """The whole notebook in one request: every source and every output's text as stored (or the .ipynb JSON)."""
    if raw_json:
        body = json.dumps(nb, indent=1)
    else:
        body = "\n\n".join(
            f"# In[{cell.execution_count or ' '}] ({cell.type}):\n{cell.source}\n# Out:\n"
            + "\n".join(_raw_output(output) for output in cell.outputs) for cell in snapshot.cells
        )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"{body}\n\n{PROMPT}"}]


def _script(snapshot: NotebookSnapshot) -> dict[str, Any]:
    return {"turns": [
        {"reasoning": "Where is revenue_per_unit defined?", "tool_calls": [
            {"name": "read_cell", "arguments": {"cell_id": snapshot.cells[3].id}}]},
        {"reasoning": "A typo in the column name.", "tool_calls": [
            {"name": "edit_cell", "arguments": {"cell_id": snapshot.cells[FAILING].id,
                                                "old_text": "'revenue_per_unitt'", "new_text": "'revenue_per_unit'"}}]},
        {"content": "The column is `revenue_per_unit` (defined in cell 3); I proposed the fix. Run cell 31 again."},
    ]}


async def kimi_fix_requests(snapshot: NotebookSnapshot, error: ErrorInfo) -> list[dict[str, Any]]:
    """The chat requests one fix sends, as the ScriptedServer received them."""
    built = build(ContextRequest(PROMPT, snapshot=snapshot, error=error))
    toolbox = Toolbox(SnapshotNotebook(snapshot))
    with ScriptedServer(_script(snapshot)) as server:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", backoff=0.01)
        try:
            events = [event async for event in run_agent(engine, built.messages, toolbox)]
        finally:
            await engine.aclose()
    assert toolbox.proposals and toolbox.proposals[0].after.count("'revenue_per_unit'") == 1, events[-1]
    return server.requests


def _request_tokens(request: dict[str, Any]) -> int:
    return estimate_tokens(request["messages"]) + estimate_text_tokens(json.dumps(request.get("tools") or []))


def _uncached(requests: list[dict[str, Any]]) -> int:
    """Tokens of each request that are not a prefix of the previous one (what a prefix cache cannot serve)."""
    total, previous = 0, ""
    for request in requests:
        text = json.dumps(request.get("tools") or []) + json.dumps(request["messages"])
        shared = next((i for i, (a, b) in enumerate(zip(text, previous)) if a != b), min(len(text), len(previous)))
        total += round(_request_tokens(request) * (1 - shared / len(text)))
        previous = text
    return total


def main() -> dict[str, Any]:
    nb = realistic_notebook()
    snapshot = snapshot_from_json(nb, "sales.ipynb")
    failing = snapshot.cells[FAILING]
    output = failing.outputs[0]
    error = ErrorInfo(failing.id, output["ename"], output["evalue"], output["traceback"])

    requests = anyio.run(kimi_fix_requests, snapshot, error)
    kimi_sent = sum(_request_tokens(r) for r in requests)
    kimi_uncached = _uncached(requests)
    naive_text = estimate_tokens(naive_messages(nb, snapshot))
    naive_json = estimate_tokens(naive_messages(nb, snapshot, raw_json=True))
    result = {
        "cells": len(snapshot.cells),
        "kimi_requests": len(requests),
        "kimi_first_request_tokens": _request_tokens(requests[0]),
        "kimi_sent_tokens_per_fix": kimi_sent,
        "kimi_uncached_tokens_per_fix": kimi_uncached,
        "naive_whole_notebook_text_tokens": naive_text,
        "naive_ipynb_json_tokens": naive_json,
        "ratio_naive_text_over_kimi_sent": round(naive_text / kimi_sent, 2),
        "ratio_naive_text_over_kimi_uncached": round(naive_text / kimi_uncached, 2),
        "ratio_naive_json_over_kimi_sent": round(naive_json / kimi_sent, 2),
    }
    result["headline"] = [
        {"label": "prompt tokens per fix: whole notebook / kimi-nb (3 requests)",
         "value": result["ratio_naive_text_over_kimi_sent"], "unit": "x", "target": ">= 1.5"},
        {"label": "... / kimi-nb tokens not served by a prefix cache",
         "value": result["ratio_naive_text_over_kimi_uncached"], "unit": "x", "target": ">= 3"},
    ]
    print(f"{len(snapshot.cells)}-cell notebook, failing cell #{FAILING}; estimated prompt tokens per fix:")
    print(f"  kimi-nb: {len(requests)} requests (context, read_cell, edit_cell), {kimi_sent:,} tokens sent, "
          f"{kimi_uncached:,} not served by a prefix cache (first request {result['kimi_first_request_tokens']:,})")
    print(f"  naive whole notebook as text: {naive_text:,} tokens in one request "
          f"-> {result['ratio_naive_text_over_kimi_sent']}x kimi-nb sent, "
          f"{result['ratio_naive_text_over_kimi_uncached']}x kimi-nb uncached")
    print(f"  naive .ipynb JSON (base64 figures included): {naive_json:,} tokens "
          f"-> {result['ratio_naive_json_over_kimi_sent']}x kimi-nb sent")
    return result


if __name__ == "__main__":
    main()
