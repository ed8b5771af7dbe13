"""Every tool on the file backend and on a snapshot-from-JSON backend; errors come back as results; invariants."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import anyio
import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimi_nb.memory import MemoryStore
from kimi_nb.notebook import FileNotebook, NotebookSnapshot, SnapshotNotebook
from kimi_nb.protocol import ToolCall
from kimi_nb.tools import TOOL_SCHEMAS, Toolbox, ToolResult

DATA = Path(__file__).parent / "data" / "notebooks"
BASE_TOOLS = ["list_cells", "read_cell", "edit_cell", "replace_cell", "insert_cell", "delete_cell", "view_image"]
MEMORY_TOOLS = ["memory_create", "memory_read", "memory_update", "memory_delete"]


@pytest.fixture(params=["file", "json"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> FileNotebook | SnapshotNotebook:
    path = tmp_path / "analysis.ipynb"
    shutil.copy(DATA / "analysis.ipynb", path)
    if request.param == "file":
        return FileNotebook.load(path)
    return SnapshotNotebook.from_json(json.loads(path.read_text()), "analysis.ipynb")


class VariablesNotebook(SnapshotNotebook):
    """A backend with the "variables" cap, answering from a fixed namespace summary."""

    def __init__(self, snapshot: NotebookSnapshot, variables: dict[str, str]) -> None:
        super().__init__(snapshot, caps=frozenset({"variables"}))
        self.variables = variables

    async def inspect_variable(self, name: str) -> str:
        if name not in self.variables:
            raise NameError(f"name {name!r} is not defined")
        return self.variables[name]


def run(toolbox: Toolbox, tool: str, /, **arguments: object) -> ToolResult:
    return anyio.run(toolbox.call, ToolCall("functions.x:0", tool, dict(arguments)))


def cell_ids(toolbox: Toolbox) -> list[str]:
    return [cell.id for cell in toolbox.snapshot.cells]


# ---------------------------------------------------------------------------------------------------- schemas


def test_schemas_are_byte_stable_and_depend_on_caps_and_memory(backend, tmp_path: Path) -> None:
    plain = Toolbox(backend)
    assert [s["function"]["name"] for s in plain.schemas()] == BASE_TOOLS
    assert json.dumps(plain.schemas()) == json.dumps(Toolbox(backend).schemas())
    plain.schemas()[0]["function"]["name"] = "mutated"  # callers get copies
    assert plain.schemas()[0]["function"]["name"] == "list_cells"
    full = Toolbox(VariablesNotebook(backend.snapshot(), {}), memory=MemoryStore(tmp_path))
    names = [s["function"]["name"] for s in full.schemas()]
    assert names == [s["function"]["name"] for s in TOOL_SCHEMAS]
    assert names == BASE_TOOLS[:6] + ["inspect_variable", "view_image"] + MEMORY_TOOLS
    for schema in full.schemas():
        assert schema["type"] == "function"
        params = schema["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
        assert "null" not in json.dumps(schema)  # no null anywhere (vLLM rejects nulls)


# ---------------------------------------------------------------------------------------------- reading tools


def test_list_and_read_cells(backend) -> None:
    toolbox = Toolbox(backend)
    ids = cell_ids(toolbox)
    listing = run(toolbox, "list_cells")
    assert not listing.is_error and listing.call_id == "functions.x:0" and listing.name == "list_cells"
    assert "(python, 8 cells)" in listing.content
    assert f"#6 id={ids[6]} code [5]: config = json.loads(" in listing.content
    assert "[error: JSONDecodeError: Expecting ',' delimiter" in listing.content
    by_id = run(toolbox, "read_cell", cell_id=ids[6]).content
    assert by_id == run(toolbox, "read_cell", cell_id="#6").content == run(toolbox, "read_cell", cell_id="6").content
    assert "config = json.loads('{\"threshold\": 21, \"unit\": \"C\"')\nconfig\n```" in by_id
    assert "JSONDecodeError: Expecting ',' delimiter" in by_id and "\x1b" not in by_id


def test_view_image_attaches_the_png(backend) -> None:
    toolbox = Toolbox(backend)
    result = run(toolbox, "view_image", cell_id="#4")
    assert not result.is_error and result.image is not None
    assert result.image.mime == "image/png"
    assert base64.b64decode(result.image.data).startswith(b"\x89PNG")
    assert result.image.data_url().startswith("data:image/png;base64,iVBOR")
    assert run(toolbox, "view_image", cell_id="#4", output_index="0").image == result.image  # "0" accepted
    assert "has 1 image(s); output_index must be 0-0" in run(toolbox, "view_image", cell_id="#4",
                                                             output_index=3).content
    assert "has no image outputs" in run(toolbox, "view_image", cell_id="#2").content


# ---------------------------------------------------------------------------------------------- editing tools


def test_edit_cell_proposes_a_diff_and_later_reads_see_it(backend) -> None:
    toolbox = Toolbox(backend)
    target = toolbox.snapshot.cells[6]
    result = run(toolbox, "edit_cell", cell_id=target.id, old_text="\"C\"'", new_text="\"C\"}'")
    assert not result.is_error
    proposal = result.proposal
    assert proposal is not None and proposal.kind == "edit" and proposal.cell_id == target.id
    assert proposal.before == target.source and proposal.after == target.source.replace("\"C\"'", "\"C\"}'")
    assert proposal.diff.startswith(f"--- a/cell-{target.id}\n+++ b/cell-{target.id}\n@@")
    assert "-config = json.loads('{\"threshold\": 21, \"unit\": \"C\"')" in proposal.diff
    assert proposal.diff in result.content
    assert toolbox.proposals == [proposal]
    assert backend.snapshot().cells[6].source == target.source  # nothing applied to the backend
    reread = run(toolbox, "read_cell", cell_id=target.id).content
    assert "\"C\"}')" in reread and "JSONDecodeError" not in reread  # outputs of the changed cell are gone


@pytest.mark.parametrize(
    ("old_text", "message"),
    [
        ("no such text", "old_text was not found in cell"),
        ("", "old_text is empty"),
        ("readings", "old_text occurs 2 times in cell"),
        (" high = readings", "it matches if surrounding whitespace is ignored"),
    ],
)
def test_edit_cell_errors(backend, old_text: str, message: str) -> None:
    toolbox = Toolbox(backend)
    result = run(toolbox, "edit_cell", cell_id="#7", old_text=old_text, new_text="x")
    assert result.is_error and message in result.content and "\n" not in result.content
    assert toolbox.proposals == []


def test_replace_insert_delete(backend) -> None:
    toolbox = Toolbox(backend)
    ids = cell_ids(toolbox)
    replaced = run(toolbox, "replace_cell", cell_id=ids[3], source="print('one batch')").proposal
    assert replaced.kind == "replace" and replaced.after == "print('one batch')"
    same = run(toolbox, "replace_cell", cell_id=ids[3], source="print('one batch')")
    assert same.is_error and "nothing to change" in same.content

    appended = run(toolbox, "insert_cell", source="high.mean()").proposal
    assert appended.kind == "insert" and appended.after_cell_id == ids[-1] and appended.before == ""
    assert appended.diff.startswith(f"--- /dev/null\n+++ b/cell-{appended.cell_id}")
    top = run(toolbox, "insert_cell", source="# Intro", cell_type="markdown", after_cell_id="top").proposal
    assert top.after_cell_id is None and top.cell_type == "markdown"
    middle = run(toolbox, "insert_cell", source="assert readings.size", after_cell_id="#3").proposal
    assert middle.after_cell_id == ids[2]  # "#3" is index 3 of the working copy, which now starts with "# Intro"
    bad = run(toolbox, "insert_cell", source="x", cell_type="python")
    assert bad.is_error and "cell_type must be one of code, markdown, raw" in bad.content

    deleted = run(toolbox, "delete_cell", cell_id=ids[0]).proposal
    assert deleted.kind == "delete" and deleted.after == "" and deleted.diff.endswith("-Load readings, clean them, plot, export.")
    assert cell_ids(toolbox) == [top.cell_id, ids[1], ids[2], middle.cell_id] + ids[3:] + [appended.cell_id]
    assert len({p.cell_id for p in toolbox.proposals if p.kind == "insert"}) == 3
    assert [p.kind for p in toolbox.proposals] == ["replace", "insert", "insert", "insert", "delete"]


def test_proposals_apply_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "analysis.ipynb"
    shutil.copy(DATA / "analysis.ipynb", path)
    notebook = FileNotebook.load(path)
    toolbox = Toolbox(notebook)
    run(toolbox, "edit_cell", cell_id="#6", old_text="\"C\"'", new_text="\"C\"}'")
    run(toolbox, "insert_cell", source="print(high)", after_cell_id="#7")
    for proposal in toolbox.proposals:
        notebook.apply(proposal)
    notebook.save()
    nbformat.validate(nbformat.read(path, as_version=4))
    assert [c.source for c in FileNotebook.load(path).snapshot().cells] == [c.source for c in toolbox.snapshot.cells]


# --------------------------------------------------------------------------------------- errors, never raised


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ToolCall("c1", "run_code", {"code": "1"}), "unknown tool 'run_code'; available tools: list_cells, read_cell"),
        (ToolCall("c1", "inspect_variable", {"name": "x"}), "unknown tool 'inspect_variable'"),
        (ToolCall("c1", "memory_read", {}), "unknown tool 'memory_read'"),
        (ToolCall("c1", "edit_cell", {}, error="arguments are not valid JSON: Expecting ',' delimiter"),
         "the call to edit_cell was not run (arguments are not valid JSON"),
        (ToolCall("c1", "read_cell", {}), "read_cell needs argument(s) cell_id"),
        (ToolCall("c1", "read_cell", {"cell_id": 3}), "read_cell argument cell_id must be a string, got int"),
        (ToolCall("c1", "read_cell", {"cell_id": "#3", "lines": 5}), "unexpected argument(s) lines; it takes: cell_id"),
        (ToolCall("c1", "read_cell", {"cell_id": "zzz"}), "no cell with id 'zzz'; call list_cells"),
        (ToolCall("c1", "read_cell", {"cell_id": "#99"}), "there is no cell #99; the notebook has 8 cells (#0-#7)"),
        (ToolCall("c1", "view_image", {"cell_id": "#4", "output_index": True}), "output_index must be a integer"),
        (ToolCall("c1", "delete_cell", {"cell_id": None}), "delete_cell needs argument(s) cell_id"),
    ],
)
def test_tool_problems_come_back_as_error_results(backend, call: ToolCall, message: str) -> None:
    result = anyio.run(Toolbox(backend).call, call)
    assert result.is_error and result.call_id == "c1"
    assert message in result.content
    assert "\n" not in result.content


def test_unexpected_failures_become_error_results() -> None:
    broken = {"cells": [{"id": "a", "source": "x", "outputs": [{"output_type": "error", "ename": "E", "traceback": 5}]}]}
    result = run(Toolbox(SnapshotNotebook.from_json(broken)), "read_cell", cell_id="a")
    assert result.is_error and "read_cell failed unexpectedly (TypeError" in result.content


# ------------------------------------------------------------------------------------------ variables, memory


def test_inspect_variable_on_a_backend_with_variables(backend) -> None:
    toolbox = Toolbox(VariablesNotebook(backend.snapshot(), {"readings": "ndarray float64 shape (200,)"}))
    assert run(toolbox, "inspect_variable", name="readings").content == "ndarray float64 shape (200,)"
    missing = run(toolbox, "inspect_variable", name="nope")
    assert missing.is_error and "could not inspect nope: NameError" in missing.content
    code = run(toolbox, "inspect_variable", name="__import__('os').system('x')")
    assert code.is_error and "is not a variable name" in code.content


def test_memory_tools(backend, tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "memory")
    toolbox = Toolbox(backend, memory=store)
    assert run(toolbox, "memory_read", query="").content == "There are no saved notes."
    assert run(toolbox, "memory_create", key="plot-style", content="Use seaborn, dark theme").content == \
        "Saved note 'plot-style'."
    run(toolbox, "memory_create", key="units", content="Temperatures are in Celsius")
    duplicate = run(toolbox, "memory_create", key="Plot-Style", content="x")
    assert duplicate.is_error and "already exists; use memory_update" in duplicate.content
    assert run(toolbox, "memory_read", query="celsius").content == "- units: Temperatures are in Celsius"
    assert run(toolbox, "memory_read").content.splitlines()[0] == "- plot-style: Use seaborn, dark theme"
    assert run(toolbox, "memory_update", key="units", content="Kelvin").content == "Updated note 'units'."
    assert store.get("units").content == "Kelvin"
    assert run(toolbox, "memory_delete", key="units").content == "Deleted note 'units'."
    gone = run(toolbox, "memory_delete", key="units")
    assert gone.is_error and "no note with key 'units'; existing keys: plot-style" in gone.content
    assert [m.key for m in MemoryStore(tmp_path / "memory").list()] == ["plot-style"]


# ------------------------------------------------------------------------------------------------ invariants

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_ref = st.integers(min_value=-1, max_value=12).map(lambda i: f"#{i}")
_operation = st.one_of(
    st.tuples(st.just("edit_cell"), _ref, st.integers(0, 30), st.integers(0, 12), _text),
    st.tuples(st.just("replace_cell"), _ref, _text),
    st.tuples(st.just("insert_cell"), st.one_of(st.none(), st.just("top"), _ref), _text,
              st.sampled_from(["code", "markdown", "raw"])),
    st.tuples(st.just("delete_cell"), _ref),
)


def _call(toolbox: Toolbox, operation: tuple, step: int) -> ToolResult:
    name = operation[0]
    if name == "edit_cell":
        _, ref, start, length, new_text = operation
        index = int(ref[1:])
        source = toolbox.snapshot.cells[index].source if 0 <= index < len(toolbox.snapshot.cells) else ""
        arguments = {"cell_id": ref, "old_text": source[start : start + length], "new_text": new_text}
    elif name == "replace_cell":
        arguments = {"cell_id": operation[1], "source": operation[2]}
    elif name == "insert_cell":
        arguments = {"after_cell_id": operation[1], "source": operation[2], "cell_type": operation[3]}
    else:
        arguments = {"cell_id": operation[1]}
    return anyio.run(toolbox.call, ToolCall(f"functions.{name}:{step}", name, arguments))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_operation, max_size=12), old_format=st.booleans())
def test_random_edits_keep_the_notebook_valid_and_proposals_replay(tmp_path: Path, operations: list,
                                                                  old_format: bool) -> None:
    source = DATA / ("analysis_v44.ipynb" if old_format else "analysis.ipynb")
    path = tmp_path / "work.ipynb"
    shutil.copy(source, path)
    notebook = FileNotebook.load(path)
    toolbox = Toolbox(notebook)
    for step, operation in enumerate(operations):
        result = _call(toolbox, operation, step)
        assert isinstance(result, ToolResult) and result.call_id.endswith(f":{step}")
        assert result.is_error == (result.proposal is None)
    for proposal in toolbox.proposals:
        notebook.apply(proposal)
    notebook.save()
    nbformat.validate(nbformat.read(path, as_version=nbformat.NO_CONVERT))
    reloaded = FileNotebook.load(path).snapshot().cells
    expected = toolbox.snapshot.cells
    assert [(c.type, c.source) for c in reloaded] == [(c.type, c.source) for c in expected]
    if not old_format:
        assert [c.id for c in reloaded] == [c.id for c in expected]
