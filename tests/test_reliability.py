"""Reliability: a fault matrix against the ScriptedServer through every front door, and fuzzed notebook tools.

Each fault (rate limit, server errors, a dropped or slow stream, "(no content)", leaked template tokens, malformed
tool JSON, an unknown tool, a missing cell) must end in a recovered answer or one clear line, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.interactiveshell import InteractiveShell

from bench.bench_first_token import jupyter_server
from kimi_nb.agent import AgentDone, ToolResultEvent, run_agent
from kimi_nb.engine import RemoteEngine
from kimi_nb.errors import KimiError, NotebookError
from kimi_nb.notebook import FileNotebook, SnapshotNotebook
from kimi_nb.protocol import ToolCall
from kimi_nb.testing import ScriptedServer
from kimi_nb.tools import Toolbox, ToolResult

DATA = Path(__file__).parent / "data" / "notebooks"
ANSWER = "Recovered answer."
FINAL = {"content": ANSWER}
NOTEBOOK: dict[str, Any] = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    "cells": [{"id": "c1", "cell_type": "code", "metadata": {}, "execution_count": 1, "source": "total = 1 + 1",
               "outputs": []}],
}


@dataclass(frozen=True)
class Fault:
    """One row of the matrix: the scripted turns, and what the user must end up with."""

    turns: list[dict[str, Any]]
    message: str | None = None  # None: the answer recovers; else a substring of the one-line message
    tool_error: str | None = None  # a tool failure the model must have been told about


FAULTS: dict[str, Fault] = {
    "429 with Retry-After": Fault([{"fault": {"http": 429, "retry_after": 0.2}}, FINAL]),
    "500 once": Fault([{"fault": {"http": 500, "message": "worker restarted"}}, FINAL]),
    "500 every time": Fault([{"fault": {"http": 500, "message": "engine is down"}}], message="500"),
    "dropped stream": Fault([{"content": "An answer cut in the middle", "fault": {"drop_after": 12}}],
                            message="dropped"),
    "slow stream": Fault([{"content": ANSWER, "chunk": 2, "fault": {"delay": 0.02}}]),
    "(no content)": Fault([{"content": ANSWER, "fault": {"no_content": True}}]),
    "leaked template tokens": Fault([{"mode": "raw", "reasoning": "Look first.",
                                      "tool_calls": [{"name": "list_cells", "arguments": {}}]}, FINAL]),
    "malformed tool JSON": Fault([{"tool_calls": [{"name": "read_cell", "arguments": '{"cell_id": "c1'}]}, FINAL],
                                 tool_error="not valid JSON"),
    "unknown tool name": Fault([{"tool_calls": [{"name": "run_shell", "arguments": {"command": "ls"}}]}, FINAL],
                               tool_error="unknown tool 'run_shell'"),
    "missing cell": Fault([{"tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "c404"}}]}, FINAL],
                          tool_error="'c404'"),
}


@dataclass(frozen=True)
class Outcome:
    """What a front door showed: the answer text, or the one-line failure message, and everything it printed."""

    answer: str | None
    message: str | None
    shown: str


class Matrix:
    """A ScriptedServer responder playing every fault for every front door on one server: the prompt carries a
    ``[door:fault]`` marker, and the n-th request of that conversation gets the fault's n-th turn (a retry is a
    new request, so it gets the next turn; the last turn repeats for faults that never recover)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    @staticmethod
    def prompt(door: str, fault: str) -> str:
        return f"[{door}:{fault}] What is total?"

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(body["messages"])
        marker = next((m for m in self._markers() if m in text), None)
        if marker is None:
            return {"content": "no fault for this request"}
        turns = FAULTS[marker.split(":", 1)[1][:-1]].turns
        step = self.calls.get(marker, 0)
        self.calls[marker] = step + 1
        return turns[min(step, len(turns) - 1)]

    @staticmethod
    def _markers() -> list[str]:
        return [f"[{door}:{fault}]" for door in (*DOORS, "repair") for fault in FAULTS]

    @staticmethod
    def requests_for(server: ScriptedServer, door: str, fault: str) -> list[dict[str, Any]]:
        return [r for r in server.requests if f"[{door}:{fault}]" in json.dumps(r["messages"])]


@pytest.fixture(scope="module")
def scripted() -> Any:
    with ScriptedServer(responder=Matrix()) as server:
        yield server


def check(outcome: Outcome, fault: Fault, requests: list[dict[str, Any]]) -> None:
    """The user got the recovered answer or one clear line, never a traceback; tool failures reached the model."""
    assert "Traceback" not in outcome.shown
    if fault.message is None:
        assert outcome.message is None, outcome.message
        assert outcome.answer is not None and ANSWER in outcome.answer, outcome
        assert "(no content)" not in outcome.answer and "<|" not in outcome.answer
    else:
        assert outcome.answer is None, outcome
        assert outcome.message is not None and fault.message in outcome.message, outcome
        assert "\n" not in outcome.message.strip() and "Traceback" not in outcome.message
    if fault.tool_error is not None:  # the model was told what went wrong, as a tool result
        tool_results = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
        assert any(fault.tool_error in content for content in tool_results), tool_results


# ------------------------------------------------------------------------------------------------ front doors


def agent_front_door(server: ScriptedServer, prompt: str) -> Outcome:
    """The core as every front door drives it: run_agent over a real RemoteEngine."""

    async def drive() -> Outcome:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", timeout=10, max_retries=2, backoff=0.01)
        toolbox = Toolbox(SnapshotNotebook.from_json(NOTEBOOK, "faults.ipynb"))
        shown: list[str] = []
        try:
            async for event in run_agent(engine, [{"role": "user", "content": prompt}], toolbox):
                if isinstance(event, ToolResultEvent):
                    shown.append(event.result.content)
                if isinstance(event, AgentDone):
                    return Outcome(event.final_message.content, None, "\n".join(shown))
        except KimiError as exc:
            return Outcome(None, str(exc), "\n".join(shown))
        finally:
            await engine.aclose()
        raise AssertionError("run_agent ended without AgentDone")

    return anyio.run(drive)


def magics_front_door(server: ScriptedServer, prompt: str) -> Outcome:
    """``%%kimi`` in an IPython shell (terminal mode: the answer and any failure line are printed)."""
    shell = InteractiveShell.instance()
    if "KimiMagics" not in shell.magics_manager.registry:
        shell.config.KimiNB.max_retries = 2
        shell.run_cell("%load_ext kimi_nb")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        shell.run_cell(f"%kimi engine use {server.base_url}")
        result = shell.run_cell(f"%%kimi\n{prompt}", store_history=True)
    shown = out.getvalue()
    assert result.error_in_exec is None, shown
    failure = re.search(r"kimi-nb: (.*?)\]?$", shown, re.MULTILINE)
    return Outcome(None, failure.group(1), shown) if failure else Outcome(shown, None, shown)


def sidebar_front_door(server: ScriptedServer, prompt: str) -> Outcome:
    """``POST kimi-nb/api/chat`` on a real Jupyter Server (started once per module, see ``jupyter``)."""
    url, token = JUPYTER[server.base_url]
    response = httpx.post(f"{url}/kimi-nb/api/chat", headers={"Authorization": f"token {token}"}, timeout=120,
                          json={"prompt": prompt, "notebook": NOTEBOOK, "path": "faults.ipynb"})
    if response.status_code != 200:
        assert response.status_code == 502, response.text
        return Outcome(None, response.json()["message"], response.text)
    events = [json.loads(line) for line in response.text.splitlines()]
    last = events[-1]
    if last["type"] == "error":
        return Outcome(None, last["message"], response.text)
    assert last["type"] == "done", last
    return Outcome(last["content"], None, response.text)


#: Jupyter servers started by the ``jupyter`` fixture: scripted base URL -> (server URL, token).
JUPYTER: dict[str, tuple[str, str]] = {}

DOORS: dict[str, Callable[[ScriptedServer, str], Outcome]] = {
    "agent": agent_front_door,
    "magics": magics_front_door,
    "sidebar": sidebar_front_door,
}


@pytest.fixture(scope="module")
def jupyter(scripted: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with jupyter_server(scripted.base_url, tmp_path_factory.mktemp("jupyter"),
                        config="c.KimiNB.max_retries = 2") as running:
        JUPYTER[scripted.base_url] = running
        yield running
        del JUPYTER[scripted.base_url]


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_ends_in_an_answer_or_one_clear_line(scripted: ScriptedServer, jupyter: Any, door: str,
                                                   name: str) -> None:
    outcome = DOORS[door](scripted, Matrix.prompt(door, name))
    check(outcome, FAULTS[name], Matrix.requests_for(scripted, door, name))


@pytest.fixture(scope="module")
def repair_report(scripted: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``kimi-nb repair --jobs 4`` run over a notebook per fault, each failing in a cell naming its fault."""
    folder = tmp_path_factory.mktemp("repair")
    for number, name in enumerate(FAULTS):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            f"# {Matrix.prompt('repair', name)}\ntotal = undefined_name + 1", id="c1")],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.write(nb, folder / f"fault_{number}.ipynb")
    report = folder / "report.json"
    done = subprocess.run([sys.executable, "-m", "kimi_nb.cli", "repair", str(folder), "--diff", "--jobs", "4",
                           "--max-attempts", "1", "--base-url", scripted.base_url, "--report", str(report)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "MOONSHOT_"))})
    assert done.returncode in (0, 1), done.stdout + done.stderr
    results = {Path(item["path"]).stem: item for item in json.loads(report.read_text())["notebooks"]}
    return {"shown": done.stdout + done.stderr, "results": results}


@pytest.mark.parametrize("name", list(FAULTS))
def test_repair_fault_ends_in_an_answer_or_one_clear_line(scripted: ScriptedServer, repair_report: dict[str, Any],
                                                          name: str) -> None:
    result = repair_report["results"][f"fault_{list(FAULTS).index(name)}"]
    attempt = result["attempts"][0]
    if attempt["outcome"] == "model error":
        outcome = Outcome(None, attempt["message"], repair_report["shown"])
    else:
        outcome = Outcome(attempt["message"], None, repair_report["shown"])
    assert "\n" not in result["reason"]
    check(outcome, FAULTS[name], Matrix.requests_for(scripted, "repair", name))


# ------------------------------------------------------------------------------------------- fuzzed fault scripts

_turns = st.sampled_from([
    {"fault": {"http": 429, "retry_after": 0.01}},
    {"fault": {"http": 503}},
    {"content": "cut short", "fault": {"drop_after": 4}},
    {"content": ANSWER, "fault": {"no_content": True}},
    {"content": ANSWER, "chunk": 1},
    {"reasoning": "only thinking"},
    {"content": ""},
    {"mode": "raw", "tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "c1"}}]},
    {"tool_calls": [{"name": "edit_cell", "arguments": '{"cell_id": "c1", "old_text": '}]},
    {"tool_calls": [{"name": "run_shell", "arguments": {}}, {"name": "read_cell", "arguments": {"cell_id": "c9"}}]},
    {"tool_calls": [{"name": "edit_cell", "arguments": {"cell_id": "c1", "old_text": "1 + 1", "new_text": "2"}}]},
    {"text": "<|tool_calls_section_begin|><|tool_call_begin|>functions.read_cell:0<|tool_call_argument_begin|>{"},
])


@settings(max_examples=25, deadline=None)
@given(turns=st.lists(_turns, min_size=1, max_size=5))
def test_any_fault_sequence_ends_cleanly_with_a_well_formed_history(turns: list[dict[str, Any]]) -> None:
    async def drive(server: ScriptedServer) -> AgentDone | KimiError:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", timeout=10, max_retries=1, backoff=0.001)
        toolbox = Toolbox(SnapshotNotebook.from_json(NOTEBOOK, "faults.ipynb"))
        try:
            events = [e async for e in run_agent(engine, [{"role": "user", "content": "hi"}], toolbox, max_steps=4)]
        except KimiError as exc:  # anything else is a bug that would reach the user as a traceback
            return exc
        finally:
            await engine.aclose()
        return events[-1]

    with ScriptedServer({"turns": turns}) as server:
        outcome = anyio.run(drive, server)
    if isinstance(outcome, KimiError):
        assert str(outcome).strip() and "\n" not in str(outcome)
        return
    assert isinstance(outcome, AgentDone)
    called: set[str] = set()
    for message in outcome.messages:  # the history a front door sends back next time must be accepted
        if message["role"] == "assistant":
            calls = message.get("tool_calls") or []
            assert all(isinstance(call["function"]["arguments"], str) for call in calls)  # as the model sent them
            called |= {call["id"] for call in calls}
        elif message["role"] == "tool":
            assert message["tool_call_id"] in called
    assert "(no content)" not in outcome.final_message.content and "<|" not in outcome.final_message.content


# --------------------------------------------------------------------------------------- fuzzed notebook tools
# tests/test_tools.py already checks that random edit sequences replay into a valid file; these add arbitrary
# (wrong) calls the model may make, and accepting only some proposals with a write after each one.

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=6)
_names = st.sampled_from(["list_cells", "read_cell", "edit_cell", "replace_cell", "insert_cell", "delete_cell",
                          "view_image", "memory_create", "run_shell", "", "read_cell\n"])
_keys = st.sampled_from(["cell_id", "old_text", "new_text", "source", "cell_type", "after_cell_id", "output_index",
                         "key", "extra"])
_calls = st.tuples(_names, st.dictionaries(_keys, _json | st.sampled_from(["#0", "#1", "c1", "#-1", "top"]),
                                           max_size=4), st.one_of(st.none(), st.text(min_size=1, max_size=20)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(_calls, max_size=10))
def test_arbitrary_tool_calls_never_raise_nor_touch_the_file(tmp_path: Path, calls: list) -> None:
    path = tmp_path / "work.ipynb"
    shutil.copy(DATA / "analysis.ipynb", path)
    before = path.read_bytes()
    toolbox = Toolbox(FileNotebook.load(path))
    for step, (name, arguments, error) in enumerate(calls):
        result = anyio.run(toolbox.call, ToolCall(f"functions.{name}:{step}", name, arguments, error=error))
        assert isinstance(result, ToolResult) and result.call_id == f"functions.{name}:{step}"
        if result.is_error:
            assert result.proposal is None and result.content.strip() and "\n" not in result.content.strip()
            assert "Traceback" not in result.content
    assert path.read_bytes() == before  # tools only propose; nothing is written until a proposal is accepted


_edits = st.lists(st.tuples(st.sampled_from(["replace_cell", "insert_cell", "delete_cell"]),
                            st.integers(0, 9), st.text(max_size=30), st.booleans()), min_size=1, max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=_edits)
def test_accepting_some_proposals_with_a_write_after_each_keeps_a_valid_file(tmp_path: Path, edits: list) -> None:
    path = tmp_path / "work.ipynb"
    shutil.copy(DATA / "analysis.ipynb", path)
    notebook = FileNotebook.load(path)
    toolbox = Toolbox(SnapshotNotebook.from_json(json.loads(path.read_text()), "work.ipynb"))
    for step, (name, index, text, accept) in enumerate(edits):
        arguments = {"cell_id": f"#{index}"} if name != "insert_cell" else {"after_cell_id": f"#{index}"}
        if name != "delete_cell":
            arguments["source"] = text
        result = anyio.run(toolbox.call, ToolCall(f"functions.{name}:{step}", name, arguments))
        if result.proposal is None or not accept:
            continue  # an out-of-range cell (an error result) or the user clicked Reject
        saved = path.read_bytes()
        try:
            notebook.apply(result.proposal)
        except NotebookError as exc:  # it builds on a rejected proposal: refused in one line, file untouched
            assert "\n" not in str(exc)
            assert path.read_bytes() == saved
            notebook = FileNotebook.load(path)
            continue
        notebook.save()
        nbformat.validate(nbformat.read(path, as_version=nbformat.NO_CONVERT))
        assert FileNotebook.load(path).snapshot().cells == notebook.snapshot().cells
