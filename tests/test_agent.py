"""The tool-call loop end to end: ScriptedServer over real HTTP, the real openai client, real Toolbox."""

from __future__ import annotations

import base64
import json

import nbformat
import pytest

from kimi_nb.agent import AgentDone, Notice, ProposalMade, ToolResultEvent, event_to_json, run_agent
from kimi_nb.engine import RemoteEngine, Usage
from kimi_nb.notebook import SnapshotNotebook
from kimi_nb.protocol import TextDelta
from kimi_nb.testing import ScriptedServer
from kimi_nb.tools import Toolbox

pytestmark = pytest.mark.anyio

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def _notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import math", id="c1"),
        nbformat.v4.new_code_cell(
            "print(math.sqroot(2))",
            id="c2",
            outputs=[nbformat.v4.new_output("error", ename="AttributeError",
                                            evalue="module 'math' has no attribute 'sqroot'", traceback=[])],
        ),
        nbformat.v4.new_code_cell(
            "plot()", id="c3",
            outputs=[nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})],
        ),
    ]
    return json.loads(nbformat.writes(nb))


def _start(nb: dict | None = None) -> Toolbox:
    return Toolbox(SnapshotNotebook.from_json(nb or _notebook(), "demo.ipynb"))


async def _run(script: dict, toolbox: Toolbox, **options) -> tuple[list, ScriptedServer]:
    with ScriptedServer(script) as server:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", backoff=0.01)
        try:
            messages = [{"role": "system", "content": "You are Kimi."}, {"role": "user", "content": "fix it"}]
            events = [event async for event in run_agent(engine, messages, toolbox, **options)]
        finally:
            await engine.aclose()
    return events, server


async def test_list_read_edit_yields_the_right_proposal() -> None:
    script = {"turns": [
        {"reasoning": "Look at the cells first.", "tool_calls": [{"name": "list_cells", "arguments": {}}]},
        {"tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "c2"}}]},
        {"reasoning": "sqroot is a typo.", "tool_calls": [
            {"name": "edit_cell", "arguments": {"cell_id": "c2", "old_text": "sqroot", "new_text": "sqrt"}}]},
        {"content": "Fixed the typo: `math.sqrt`."},
    ]}
    events, server = await _run(script, _start())

    proposals = [e.proposal for e in events if isinstance(e, ProposalMade)]
    assert len(proposals) == 1
    assert proposals[0].kind == "edit" and proposals[0].cell_id == "c2"
    assert proposals[0].before == "print(math.sqroot(2))" and proposals[0].after == "print(math.sqrt(2))"
    assert "-print(math.sqroot(2))" in proposals[0].diff and "+print(math.sqrt(2))" in proposals[0].diff
    done = events[-1]
    assert isinstance(done, AgentDone) and done.stopped == "answer" and done.steps == 4
    assert done.final_message.content == "Fixed the typo: `math.sqrt`."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.final_message.content

    # the model saw its own tool results, with its exact ids, and its reasoning came back with each call
    last = server.requests[-1]["messages"]
    tool_messages = [m for m in last if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [
        "functions.list_cells:0", "functions.read_cell:1", "functions.edit_cell:2"]
    assert "sqroot" in tool_messages[1]["content"] and "AttributeError" in tool_messages[1]["content"]
    assistant_calls = [m for m in last if m["role"] == "assistant" and m.get("tool_calls")]
    assert assistant_calls[0]["reasoning_content"] == "Look at the cells first."
    assert assistant_calls[2]["reasoning_content"] == "sqroot is a typo."
    assert all(r["tools"] == server.requests[0]["tools"] for r in server.requests)  # byte-stable declarations


async def test_tool_errors_go_back_to_the_model_instead_of_raising() -> None:
    script = {"turns": [
        {"tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "nope"}},
                        {"name": "edit_cell", "arguments": "{\"cell_id\": \"c2\", "},
                        {"name": "launch_missiles", "arguments": {}}]},
        {"content": "Sorry, I could not find that cell."},
    ]}
    events, server = await _run(script, _start())
    results = [e.result for e in events if isinstance(e, ToolResultEvent)]
    assert [r.is_error for r in results] == [True, True, True]
    assert "nope" in results[0].content
    tool_messages = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [r.content for r in results]
    assert isinstance(events[-1], AgentDone) and events[-1].stopped == "answer"
    assert not any(isinstance(e, ProposalMade) for e in events)


async def test_raw_leaked_markers_run_as_tool_calls() -> None:
    script = {"turns": [
        {"mode": "raw", "reasoning": "Insert a cell.",
         "tool_calls": [{"name": "insert_cell", "arguments": {"source": "x = 1", "after_cell_id": "c1"}}]},
        {"mode": "raw", "content": "Inserted."},
    ]}
    events, _ = await _run(script, _start())
    proposals = [e.proposal for e in events if isinstance(e, ProposalMade)]
    assert [(p.kind, p.after, p.after_cell_id) for p in proposals] == [("insert", "x = 1", "c1")]
    assert events[-1].final_message.content == "Inserted."
    assert "<|tool_call" not in "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_view_image_sends_the_png_as_an_image_part() -> None:
    script = {"turns": [
        {"tool_calls": [{"name": "view_image", "arguments": {"cell_id": "c3"}}]},
        {"content": "The plot is empty."},
    ]}
    _, server = await _run(script, _start())
    last = server.requests[-1]["messages"][-1]
    assert last["role"] == "user"
    urls = [p["image_url"]["url"] for p in last["content"] if p["type"] == "image_url"]
    assert urls == [f"data:image/png;base64,{PNG}"]


async def test_reasoning_only_turn_is_explained_not_silent() -> None:
    events, _ = await _run({"turns": [{"reasoning": "Thinking about it...", "fault": {"no_content": True}}]},
                           _start())
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "only produced reasoning" in notices[0]
    assert events[-1].final_message.content == ""


async def test_max_steps_bounds_the_loop_and_keeps_usage() -> None:
    turn = {"tool_calls": [{"name": "list_cells", "arguments": {}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "cached_tokens": 80}}
    events, server = await _run({"turns": [turn], "repeat": True}, _start(), max_steps=3)
    done = events[-1]
    assert isinstance(done, AgentDone) and done.stopped == "max_steps" and done.steps == 3
    assert len(server.requests) == 3
    assert done.usage == Usage(300, 30, 240)
    assert any(isinstance(e, Notice) and "3 model turns" in e.text for e in events)


async def test_every_event_has_a_json_form() -> None:
    script = {"turns": [
        {"reasoning": "r", "tool_calls": [{"name": "edit_cell", "arguments":
                                           {"cell_id": "c2", "old_text": "sqroot", "new_text": "sqrt"}}]},
        {"content": "done"},
    ]}
    events, _ = await _run(script, _start())
    kinds = [event_to_json(e)["type"] for e in events]
    json.dumps([event_to_json(e) for e in events])
    for kind in ("reasoning", "tool_call_started", "tool_call", "tool_result", "proposal", "usage", "text", "done"):
        assert kind in kinds
    assert kinds[-1] == "done"
