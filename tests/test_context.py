"""Context assembly: order, images, redaction, budget, history trimming, prefix stability, and what the
ScriptedServer receives over real HTTP through the real openai client."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kimi_nb.context import (
    IMAGE_TOKENS,
    SYSTEM_PROMPT,
    ContextRequest,
    ErrorInfo,
    build,
    estimate_text_tokens,
    estimate_tokens,
)
from kimi_nb.memory import Memory
from kimi_nb.notebook import Cell, FileNotebook, NotebookSnapshot, snapshot_from_json
from kimi_nb.tools import Image, Toolbox, images_of

DATA = Path(__file__).parent / "data" / "notebooks"
SECRET = "sk-proj-" + "Q9w8E7r6T5y4U3i2" * 3
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture
def analysis() -> NotebookSnapshot:
    return FileNotebook.load(DATA / "analysis.ipynb").snapshot()


def failing(snapshot: NotebookSnapshot, index: int) -> ErrorInfo:
    output = next(o for o in snapshot.cells[index].outputs if o["output_type"] == "error")
    return ErrorInfo(snapshot.cells[index].id, output["ename"], output["evalue"], output["traceback"])


def user_text(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def big_notebook(cells: int = 40, fail_at: int = 30) -> NotebookSnapshot:
    """Many cells with long outputs; one failing cell."""
    out = []
    for i in range(cells):
        source = f"# step {i}\nvalues_{i} = [x * {i} for x in range(1000)]\nprint(values_{i}[:400])"
        outputs: tuple[dict, ...] = ({"output_type": "stream", "name": "stdout", "text": str(list(range(400))) * 3},)
        if i == fail_at:
            outputs = ({"output_type": "error", "ename": "NameError", "evalue": "name 'valuez' is not defined",
                        "traceback": ["NameError: name 'valuez' is not defined"]},)
        out.append(Cell(f"id{i:03d}", "code", source, outputs, i + 1))
    return NotebookSnapshot(tuple(out), "python", "big.ipynb")


# ----------------------------------------------------------------------------------------------- structure


def test_order_system_memories_history_then_notebook_and_prompt(analysis: NotebookSnapshot) -> None:
    history = [
        {"role": "system", "content": "an old system prompt"},
        {"role": "user", "content": "What does cell 2 do?"},
        {"role": "assistant", "content": "It draws 200 readings."},
    ]
    memories = [Memory("units", "Celsius", "2026-01-01T00:00:00Z"), Memory("style", "seaborn", "2026-01-02T00:00:00Z")]
    built = build(ContextRequest("Fix the error", snapshot=analysis, error=failing(analysis, 6), history=history),
                  memories=memories)
    messages = built.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith(SYSTEM_PROMPT)
    assert messages[0]["content"].endswith("- style: seaborn\n- units: Celsius")
    assert messages[1:3] == history[1:]
    text = messages[-1]["content"]
    assert text.startswith("## Notebook ")
    assert text.index("## Notebook") < text.index("## Error in cell #6") < text.index("## Request\nFix the error")
    assert text.endswith("## Request\nFix the error")
    assert "JSONDecodeError: Expecting ',' delimiter" in text and "\x1b" not in text
    assert text.count("JSONDecodeError: Expecting ',' delimiter") == 1  # not repeated under the cell
    assert built.estimated_tokens == estimate_tokens(messages) and built.dropped == []


def test_without_a_snapshot_only_the_prompt_and_error(analysis: NotebookSnapshot) -> None:
    error = ErrorInfo("abc", "ValueError", "bad", "Traceback (most recent call last):\nValueError: bad")
    messages = build(ContextRequest("why?", error=error, variables=("df: DataFrame (3, 2)",))).messages
    assert messages[-1] == {
        "role": "user",
        "content": "## Error in cell abc\n```\nValueError: bad\nTraceback (most recent call last):\n```\n\n"
        "## Variables\n- df: DataFrame (3, 2)\n\n## Request\nwhy?",
    }


def test_images_go_as_image_url_parts(analysis: NotebookSnapshot) -> None:
    figure = images_of(analysis.cells[4])
    built = build(ContextRequest("Is this plot right?", snapshot=analysis, images=tuple(figure) + (Image("image/jpeg", "/9j/4AAQ"),)))
    content = built.messages[-1]["content"]
    assert content[0]["type"] == "text" and content[0]["text"].endswith("## Request\nIs this plot right?")
    urls = [part["image_url"]["url"] for part in content[1:]]
    assert urls == [f"data:image/png;base64,{figure[0].data}", "data:image/jpeg;base64,/9j/4AAQ"]
    assert all(part["type"] == "image_url" for part in content[1:])


def test_too_many_images_keeps_the_newest() -> None:
    images = tuple(Image("image/png", f"{PNG}{i}") for i in range(6))
    built = build(ContextRequest("compare", images=images), budget=IMAGE_TOKENS * 10)
    urls = [p["image_url"]["url"] for p in built.messages[-1]["content"][1:]]
    assert urls and len(urls) < 6 and urls[-1].endswith(f"{PNG}5")
    assert any("images (the oldest) left out" in note for note in built.dropped)


# ----------------------------------------------------------------------------------------------- redaction


def test_secrets_never_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "blue-whale-7731")
    nb = {"cells": [
        {"id": "a", "cell_type": "code", "source": f"client = OpenAI(api_key='{SECRET}')", "outputs": []},
        {"id": "b", "cell_type": "code", "source": "connect()", "execution_count": 2, "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "using password blue-whale-7731\n"},
            {"output_type": "error", "ename": "AuthError", "evalue": f"bad key {SECRET}",
             "traceback": [f"AuthError: Authorization: Bearer {SECRET}"]}]},
    ]}
    snapshot = snapshot_from_json(nb, "s.ipynb")
    request = ContextRequest(
        f"my key is {SECRET}, why does it fail?",
        snapshot=snapshot,
        error=ErrorInfo("b", "AuthError", f"bad key {SECRET}", [f"Authorization: Bearer {SECRET}"]),
        variables=(f"token: str = '{SECRET}'",),
        history=[{"role": "user", "content": [{"type": "text", "text": f"earlier {SECRET}"}]},
                 {"role": "assistant", "content": "ok", "reasoning_content": f"the key {SECRET}",
                  "tool_calls": [{"id": "functions.read_cell:0", "type": "function",
                                  "function": {"name": "read_cell", "arguments": json.dumps({"cell_id": SECRET})}}]},
                 {"role": "tool", "tool_call_id": "functions.read_cell:0", "content": f"password={SECRET}"}],
    )
    memories = [Memory("key", f"the user's key is {SECRET}", "t")]
    sent = json.dumps(build(request, memories=memories).messages)
    assert SECRET not in sent and "blue-whale-7731" not in sent
    assert "[REDACTED:openai-key]" in sent and "[REDACTED:env:WAREHOUSE_PASSWORD]" in sent
    assert SECRET in json.dumps(build(request, memories=memories, redact_secrets=False).messages)


def test_tool_results_are_redacted_too() -> None:
    import anyio

    from kimi_nb.notebook import SnapshotNotebook
    from kimi_nb.protocol import ToolCall

    source = f"key = '{SECRET}'\nprint(1)"
    toolbox = Toolbox(SnapshotNotebook(NotebookSnapshot((Cell("a", "code", source),))))
    read = anyio.run(toolbox.call, ToolCall("c", "read_cell", {"cell_id": "a"}))
    assert SECRET not in read.content and "[REDACTED:openai-key]" in read.content
    edit = anyio.run(toolbox.call, ToolCall("c", "edit_cell", {"cell_id": "a", "old_text": "print(1)",
                                                                 "new_text": "print(2)"}))
    assert SECRET not in edit.content and edit.proposal.after == f"key = '{SECRET}'\nprint(2)"  # real value kept
    masked = anyio.run(toolbox.call, ToolCall("c", "replace_cell", {"cell_id": "a",
                                                                     "source": "key = '[REDACTED:openai-key]'"}))
    assert masked.is_error and "would overwrite a hidden secret" in masked.content
    stale = anyio.run(toolbox.call, ToolCall("c", "edit_cell", {"cell_id": "a", "old_text": "'[REDACTED:openai-key]'",
                                                                  "new_text": "x"}))
    assert stale.is_error and "the real value is hidden" in stale.content


# ---------------------------------------------------------------------------------------------------- budget


def test_budget_keeps_the_failing_cell_and_its_neighbours() -> None:
    snapshot = big_notebook()
    error = ErrorInfo("id030", "NameError", "name 'valuez' is not defined", ["NameError: name 'valuez' is not defined"])
    built = build(ContextRequest("fix it", snapshot=snapshot, error=error), budget=6000)
    text = user_text(built.messages)
    assert built.estimated_tokens <= 6000
    assert "#30 id=id030 code [31]\n```python\n# step 30" in text  # the failing cell in full
    assert "#29 id=id029 code [30]\n```python" in text and "#31 id=id031 code [32]\n```python" in text
    assert "#2 id=id002 code [3]\n```python" not in text  # a far cell is not in full
    assert "#0 id=id000 code [1]: # step 0  (+2 lines)" in text  # every other cell as one line
    assert text.count("```python") == 8  # MAX_AUTO_FULL_CELLS: the model reads more with read_cell
    # a tiny budget still sends the prompt and error, says what was left out, and never fails
    tiny = build(ContextRequest("fix it", snapshot=snapshot, error=error), budget=500)
    assert "## Request\nfix it" in user_text(tiny.messages)
    assert "omitted to fit the context budget]" in user_text(tiny.messages)
    assert any("left out of the notebook view" in note for note in tiny.dropped)


def test_large_budget_small_notebook_shows_everything_in_full(analysis: NotebookSnapshot) -> None:
    text = user_text(build(ContextRequest("explain", snapshot=analysis)).messages)
    for index, cell in enumerate(analysis.cells):
        assert f"#{index} id={cell.id} {cell.type}" in text
        assert cell.source in text
    assert "omitted to fit the context budget" not in text


def test_explicit_cell_ids_are_shown_in_full_others_as_one_line(analysis: NotebookSnapshot) -> None:
    chosen = [analysis.cells[2].id]
    text = user_text(build(ContextRequest("explain", snapshot=analysis, cell_ids=chosen)).messages)
    assert f"#2 id={chosen[0]} code [2]\n```python" in text
    assert f"#1 id={analysis.cells[1].id} code [1]: import json  (+4 lines)" in text


def test_history_keeps_the_newest_whole_turns() -> None:
    history = []
    for turn in range(30):
        history += [
            {"role": "user", "content": f"question {turn} " + "words " * 200},
            {"role": "assistant", "content": "", "reasoning_content": "thinking",
             "tool_calls": [{"id": f"functions.list_cells:{turn}", "type": "function",
                             "function": {"name": "list_cells", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"functions.list_cells:{turn}", "content": "cells " * 100},
            {"role": "assistant", "content": f"answer {turn}"},
        ]
    built = build(ContextRequest("next question", history=history), budget=8000)
    kept = built.messages[1:-1]
    assert kept and kept[0]["role"] == "user" and kept[-1] == history[-1]
    assert len(kept) < len(history) and len(kept) % 4 == 0  # whole turns: calls stay with their results
    assert estimate_tokens(built.messages) <= 8000
    assert any("earlier conversation messages left out" in note for note in built.dropped)


def test_estimates() -> None:
    assert estimate_text_tokens("abcd" * 100) == 100
    assert estimate_text_tokens("数据" * 100) == 150  # 3 bytes per CJK character
    message = {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "x"}}]}
    assert estimate_tokens([message]) == 4 + 1 + IMAGE_TOKENS


# ---------------------------------------------------------------------------------------------------- prefix


def _shared_prefix(a: list[dict], b: list[dict]) -> float:
    x, y = json.dumps(a), json.dumps(b)
    n = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    return n / min(len(x), len(y))


def test_two_requests_on_one_notebook_share_a_long_prefix(analysis: NotebookSnapshot) -> None:
    memories = [Memory("units", "Celsius", "2026-01-01T00:00:00Z")]
    first = build(ContextRequest("Why does cell 6 fail?", snapshot=analysis), memories=memories).messages
    second = build(ContextRequest("Plot the readings as a histogram instead", snapshot=analysis),
                   memories=memories).messages
    assert _shared_prefix(first, second) >= 0.9
    # a follow-up turn: the earlier request and answer are the history, then a new notebook view and prompt
    follow_up = build(ContextRequest("And make it blue", snapshot=analysis,
                                     history=first[1:] + [{"role": "assistant", "content": "Because of JSON."}]),
                      memories=memories).messages
    assert json.dumps(follow_up).startswith(json.dumps(first)[:-1])  # the whole first request is a prefix
    big = big_notebook()
    one = build(ContextRequest("fix", snapshot=big, error=failing(big, 30)), budget=8000).messages
    two = build(ContextRequest("explain this error", snapshot=big, error=failing(big, 30)), budget=8000).messages
    assert _shared_prefix(one, two) >= 0.9


def test_build_is_deterministic(analysis: NotebookSnapshot) -> None:
    request = ContextRequest("x", snapshot=analysis, error=failing(analysis, 6))
    assert json.dumps(build(request).messages) == json.dumps(build(request).messages)


# ------------------------------------------------------------------------------------- over real HTTP


@pytest.mark.anyio
async def test_what_the_scripted_server_receives(analysis: NotebookSnapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_nb.agent import run_agent
    from kimi_nb.engine import RemoteEngine
    from kimi_nb.notebook import SnapshotNotebook
    from kimi_nb.testing import ScriptedServer

    monkeypatch.setenv("LAB_DB_PASSWORD", "orca-9911-xyz")
    cells = list(analysis.cells)
    cells[1] = Cell(cells[1].id, "code", cells[1].source + f"\nOPENAI_KEY = '{SECRET}'  # orca-9911-xyz", (), 1)
    snapshot = NotebookSnapshot(tuple(cells), "python", "analysis.ipynb")
    figure = tuple(images_of(snapshot.cells[4]))
    toolbox = Toolbox(SnapshotNotebook(snapshot))
    script = {"turns": [{"tool_calls": [{"name": "read_cell", "arguments": {"cell_id": "#1"}}]},
                        {"content": "Add the missing brace."},
                        {"content": "Done."}]}
    with ScriptedServer(script) as server:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", backoff=0.01)
        try:
            first = build(ContextRequest("Fix the error", snapshot=snapshot, error=failing(snapshot, 6),
                                         images=figure))
            done = [e async for e in run_agent(engine, first.messages, toolbox)][-1]
            second = build(ContextRequest("Thanks, and the plot?", snapshot=snapshot, history=done.messages))
            _ = [e async for e in run_agent(engine, second.messages, Toolbox(SnapshotNotebook(snapshot)))]
        finally:
            await engine.aclose()
    requests = server.requests
    assert len(requests) == 3
    wire = json.dumps(requests)
    assert SECRET not in wire and "orca-9911-xyz" not in wire  # neither in the context nor in the tool result
    first_user = requests[0]["messages"][-1]["content"]
    assert [p["type"] for p in first_user] == ["text", "image_url"]
    assert first_user[1]["image_url"]["url"] == figure[0].data_url()
    assert requests[0]["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert requests[0]["tools"] == requests[2]["tools"]  # tool declarations byte-stable across requests
    # each request extends the previous one: the prefix cache hits
    assert json.dumps(requests[1]["messages"]).startswith(json.dumps(requests[0]["messages"])[:-1])
    assert _shared_prefix(requests[1]["messages"], requests[2]["messages"]) >= 0.9
