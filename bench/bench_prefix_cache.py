"""Benchmark: how much of each request is a byte-identical prefix of the previous one (what a prefix cache reuses).

A conversation about one notebook runs through the core (context.build, run_agent, RemoteEngine) against a
ScriptedServer: a first request whose agent makes four model turns (list, read, edit, answer), a second request
on the unchanged notebook continuing from the first's history, and a third after the user accepted the edit.
For every request after the first: the share of its prompt (tools + messages, as the server sees them) that
equals the start of the previous prompt (what a prefix cache can serve; the server's ``cached_tokens /
prompt_tokens`` agrees), and how much of the previous prompt it keeps intact as its prefix (100 % when the
context is prefix-stable: new content only ever goes after the old).

    python bench/bench_prefix_cache.py
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import anyio
import nbformat

from kimi_nb.agent import AgentDone, ProposalMade, run_agent
from kimi_nb.context import ContextRequest, build
from kimi_nb.engine import RemoteEngine, Usage
from kimi_nb.notebook import SnapshotNotebook, snapshot_from_json
from kimi_nb.testing import ScriptedServer
from kimi_nb.testing.replies import prompt_text
from kimi_nb.tools import Toolbox

__all__ = ["main", "notebook", "shared_prefix"]

TARGET_PERCENT = 80.0
SCRIPT = {"turns": [
    {"reasoning": "Find the failing cell.", "tool_calls": [{"name": "list_cells", "arguments": {}}]},
    {"tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "c7"}}]},
    {"reasoning": "A typo in the column name.",
     "tool_calls": [{"name": "edit_cell", "arguments": {"cell_id": "c7", "old_text": "tempp", "new_text": "temp"}}]},
    {"content": "The column is `temp`, not `tempp`: I proposed the fix for cell c7."},
    {"content": "Cell c5 computes the monthly mean temperature."},
    {"content": "Now c7 plots the monthly means; nothing else needs changing."},
]}


def notebook() -> dict[str, Any]:
    """A small analysis notebook whose last code cell fails with a KeyError."""
    cells = [nbformat.v4.new_markdown_cell("# Weather analysis\nMonthly temperatures from the station log.", id="c1")]
    sources = [
        "import pandas as pd\nimport matplotlib.pyplot as plt",
        "df = pd.read_csv('station.csv', parse_dates=['date'])\ndf.head()",
        "df['month'] = df['date'].dt.to_period('M')\nlen(df)",
        "monthly = df.groupby('month')['temp'].mean()\nmonthly.tail()",
        "df.describe()",
        "monthly_max = df.groupby('month')['tempp'].max()\nmonthly_max.plot()",
    ]
    for number, source in enumerate(sources, start=2):
        outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": f"result of cell {number}\n" * 6},
                                          execution_count=number)]
        cells.append(nbformat.v4.new_code_cell(source, id=f"c{number}", execution_count=number, outputs=outputs))
    cells[-1].outputs = [nbformat.v4.new_output("error", ename="KeyError", evalue="'tempp'",
                                                traceback=["KeyError: 'tempp'"])]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                        "display_name": "Python 3"}})
    return json.loads(nbformat.writes(nb))


def shared_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    shared = 0
    for x, y in zip(a, b):
        if x != y:
            break
        shared += 1
    return shared


async def _conversation(server: ScriptedServer) -> tuple[list[int], list[Usage]]:
    """Three user requests on one notebook, each sending the previous answer's history back as the sidebar
    does; returns how many model requests each one made, and the usage the server reported for each."""
    engine = RemoteEngine(server.base_url, model="kimi-k2.5", max_retries=0)
    nb = notebook()
    history: tuple[dict[str, Any], ...] = ()
    made: list[int] = []
    usages: list[Usage] = []
    try:
        for prompt in ("Fix the failing cell.", "What does c5 compute?", "Is the notebook fine now?"):
            snapshot = snapshot_from_json(nb, "weather.ipynb", active_cell_id="c7")
            built = build(ContextRequest(prompt, snapshot=snapshot, history=history))
            before = len(server.requests)
            async for event in run_agent(engine, built.messages, Toolbox(SnapshotNotebook(snapshot))):
                if isinstance(event, ProposalMade):  # the user accepts: the browser edits the cell
                    cell = next(c for c in nb["cells"] if c["id"] == event.proposal.cell_id)
                    cell["source"], cell["outputs"], cell["execution_count"] = event.proposal.after, [], None
                elif isinstance(event, Usage):
                    usages.append(event)
                elif isinstance(event, AgentDone):
                    history = tuple(event.messages)
            made.append(len(server.requests) - before)
    finally:
        await engine.aclose()
    return made, usages


def main() -> dict[str, Any]:
    """Run the conversation, print the prefix shares, and return them."""
    with ScriptedServer(SCRIPT) as server:
        made, usages = anyio.run(_conversation, server)
        requests = list(server.requests)
    prompts = [prompt_text(request) for request in requests]
    pairs = list(pairwise(prompts))
    share = [shared_prefix(prev, new) / len(new) for prev, new in pairs]  # of the new prompt, cacheable
    reuse = [shared_prefix(prev, new) / len(prev) for prev, new in pairs]  # of the previous prompt, kept intact
    turns = range(made[0] - 1)  # the agent's follow-up turns inside the first user request
    later = range(made[0] - 1, len(pairs))  # the first model request of each later user request
    turn_share = 100 * sum(share[i] for i in turns) / len(turns)
    kept = 100 * min(reuse)
    result = {
        "model_requests": made,
        "prompt_chars": [len(p) for p in prompts],
        "prefix_share_per_request": [round(s, 4) for s in share],
        "previous_prompt_kept_per_request": [round(r, 4) for r in reuse],
        "cached_share_per_request": [round(u.cached_tokens / u.prompt_tokens, 4) for u in usages[1:]],
        "agent_turns_percent": round(turn_share, 2),
        "later_requests_percent": [round(100 * share[i], 2) for i in later],
        "previous_prompt_kept_min_percent": round(kept, 2),
        "headline": [
            {"label": "prefix-cache share of each agent turn's prompt", "value": round(turn_share, 2), "unit": "%",
             "target": f">= {TARGET_PERCENT:g}"},
            {"label": "previous prompt kept as prefix, every request", "value": round(kept, 2), "unit": "%",
             "target": ">= 99"},
        ],
    }
    print(f"model requests per user request: {made}")
    print(f"prefix share of each agent turn's prompt: {turn_share:.1f} % (target >= {TARGET_PERCENT:g} %)")
    print(f"prefix share of the next requests (unchanged notebook, after accepting the edit): "
          f"{', '.join(f'{100 * share[i]:.1f} %' for i in later)}")
    print(f"previous prompt kept byte-identical as the prefix: at least {kept:.2f} % of it (target >= 99 %)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
