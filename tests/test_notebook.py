"""The file backend (load, apply, byte-stable atomic save), snapshots from JSON, and the shared text rendering."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from kimi_nb.cell_text import (
    cell_summary,
    clean_traceback,
    render_cell,
    render_error,
    render_outputs,
    strip_ansi,
)
from kimi_nb.errors import NotebookError, ToolError
from kimi_nb.notebook import (
    Cell,
    FileNotebook,
    SnapshotNotebook,
    apply_to_snapshot,
    snapshot_from_json,
    write_text_atomic,
)
from kimi_nb.tools import Proposal, make_diff

DATA = Path(__file__).parent / "data" / "notebooks"


@pytest.fixture
def analysis(tmp_path: Path) -> Path:
    """A real notebook executed by nbclient (outputs, a PNG, ANSI tracebacks, an attachment, timing metadata)."""
    path = tmp_path / "analysis.ipynb"
    shutil.copy(DATA / "analysis.ipynb", path)
    return path


@pytest.fixture
def old_format(tmp_path: Path) -> Path:
    """The same notebook in nbformat 4.4: no cell ids."""
    path = tmp_path / "old.ipynb"
    shutil.copy(DATA / "analysis_v44.ipynb", path)
    return path


def edit(cell: Cell, after: str, kind: str = "edit") -> Proposal:
    return Proposal(kind, cell.id, cell.source, after, make_diff(cell.source, after, cell.id), cell.type)


def assert_valid(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    return nb


# ------------------------------------------------------------------------------------------------- loading


def test_load_gives_a_snapshot_with_ids_sources_outputs_and_language(analysis: Path) -> None:
    snapshot = FileNotebook.load(analysis).snapshot()
    raw = json.loads(analysis.read_text())
    assert [c.id for c in snapshot.cells] == [c["id"] for c in raw["cells"]]
    assert snapshot.cells[1].source.startswith("import json\nimport numpy as np")
    assert snapshot.cells[2].execution_count == 2
    assert snapshot.cells[4].outputs[0]["data"]["image/png"]
    assert snapshot.language == "python"
    assert snapshot.path == str(analysis)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON (line 1, column 2)"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"cells": []}', "is not a Jupyter notebook"),
        (b'{"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}', "only versions 3 and 4"),
        (
            (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "id": "a",'
             b' "source": "x", "metadata": {}}]}'),
            "is not a valid notebook",
        ),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1]}', "is not a valid notebook"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "is not a valid notebook"),
    ],
)
def test_load_errors_are_one_line_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(NotebookError) as info:
        FileNotebook.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="cannot read .*missing.ipynb: No such file"):
        FileNotebook.load(tmp_path / "missing.ipynb")


def test_nbformat3_is_converted(tmp_path: Path) -> None:
    from nbformat import v3

    path = tmp_path / "v3.ipynb"
    nb = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[v3.new_code_cell(input="print(1)")])])
    path.write_text(v3.writes_json(nb))
    snapshot = FileNotebook.load(path).snapshot()
    assert [c.source for c in snapshot.cells] == ["print(1)"]


# ---------------------------------------------------------------------------------------------- byte stability


def test_save_without_changes_is_byte_identical(analysis: Path, old_format: Path, tmp_path: Path) -> None:
    for path in (analysis, old_format):
        out = tmp_path / f"copy-{path.name}"
        FileNotebook.load(path).save(out)
        assert out.read_bytes() == path.read_bytes()


def test_old_format_gets_ids_in_memory_only(old_format: Path) -> None:
    notebook = FileNotebook.load(old_format)
    ids = [c.id for c in notebook.snapshot().cells]
    assert ids == [f"cell-{i}" for i in range(len(ids))]
    assert ids == [c.id for c in FileNotebook.load(old_format).snapshot().cells]  # stable across loads
    notebook.apply(edit(notebook.snapshot().cells[2], "readings = [1, 2]"))
    notebook.apply(Proposal("insert", "new1", "", "print('hi')", "", "code", "cell-0"))
    notebook.save()
    nb = assert_valid(old_format)
    assert nb.nbformat_minor == 4
    assert all("id" not in cell for cell in nb.cells)
    assert nb.cells[1].source == "print('hi')"
    assert nb.cells[3].source == "readings = [1, 2]"


def test_edit_changes_only_that_cell_byte_for_byte(analysis: Path) -> None:
    original = analysis.read_text()
    notebook = FileNotebook.load(analysis)
    cell = notebook.snapshot().cells[6]
    fixed = cell.source.replace("\"C\"'", "\"C\"}'")
    notebook.apply(edit(cell, fixed))
    notebook.save()
    nb = assert_valid(analysis)
    assert nb.cells[6].source == fixed
    assert nb.cells[6].outputs == [] and nb.cells[6].execution_count is None
    before, after = json.loads(original), json.loads(analysis.read_text())
    assert before["metadata"] == after["metadata"]
    for index, (old, new) in enumerate(zip(before["cells"], after["cells"])):
        if index != 6:
            dump = lambda c: json.dumps(c, indent=1, sort_keys=True, ensure_ascii=False)
            assert dump(old) == dump(new)
    assert after["cells"][5]["attachments"] == before["cells"][5]["attachments"]
    # the text around the edited cell is unchanged too: only the edited cell's lines differ
    old_lines, new_lines = original.splitlines(), analysis.read_text().splitlines()
    changed = [line for line in new_lines if line not in old_lines]
    assert changed and all("config" in line or "execution_count" in line or "outputs" in line for line in changed)


def test_insert_replace_delete_on_file(analysis: Path) -> None:
    notebook = FileNotebook.load(analysis)
    cells = notebook.snapshot().cells
    notebook.apply(Proposal("insert", "abcd1234", "", "# Notes", "", "markdown", None))
    notebook.apply(Proposal("insert", "ef567890", "", "x = 1", "", "code", cells[-1].id))
    notebook.apply(edit(cells[3], "pass", kind="replace"))
    notebook.apply(Proposal("delete", cells[0].id, cells[0].source, "", ""))
    notebook.save()
    nb = assert_valid(analysis)
    assert [c.id for c in nb.cells] == ["abcd1234"] + [c.id for c in cells[1:]] + ["ef567890"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[-1].source == "x = 1"
    assert nb.cells[3].source == "pass"


def test_apply_refuses_stale_or_unknown_proposals(analysis: Path) -> None:
    notebook = FileNotebook.load(analysis)
    cell = notebook.snapshot().cells[2]
    with pytest.raises(NotebookError, match="changed since the proposal"):
        notebook.apply(Proposal("edit", cell.id, "something else", "y", ""))
    with pytest.raises(NotebookError, match="no cell with id 'nope'"):
        notebook.apply(Proposal("delete", "nope", "", "", ""))
    with pytest.raises(NotebookError, match="a cell with that id exists"):
        notebook.apply(Proposal("insert", cell.id, "", "x", ""))
    with pytest.raises(NotebookError, match="no cell with id 'nope'"):
        notebook.apply(Proposal("insert", "fresh", "", "x", "", "code", "nope"))


def test_save_refuses_an_invalid_notebook_and_leaves_the_file(analysis: Path) -> None:
    original = analysis.read_bytes()
    notebook = FileNotebook.load(analysis)
    notebook.nb.cells[0]["cell_type"] = "bogus"
    with pytest.raises(NotebookError, match="refusing to write an invalid notebook"):
        notebook.save()
    assert analysis.read_bytes() == original


def test_atomic_write_with_backup_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "n.ipynb"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_text_atomic(path, "new", backup=True)
    assert path.read_text() == "new"
    assert (tmp_path / "n.ipynb.bak").read_text() == "old"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.ipynb", "n.ipynb.bak"]
    with pytest.raises(NotebookError, match="cannot write"):
        write_text_atomic(tmp_path / "no-such-dir" / "x.ipynb", "x")


def test_file_backend_has_no_variables(analysis: Path) -> None:
    notebook = FileNotebook.load(analysis)
    assert notebook.caps == frozenset()
    with pytest.raises(ToolError):
        notebook.inspect_variable("x")


# --------------------------------------------------------------------------------------------- JSON snapshots


def test_snapshot_from_browser_json_matches_file_snapshot(analysis: Path) -> None:
    raw = json.loads(analysis.read_text())  # sources and texts as lists of lines, as in the file
    from_json = snapshot_from_json(raw, "analysis.ipynb", active_cell_id=raw["cells"][6]["id"])
    from_file = FileNotebook.load(analysis).snapshot()
    assert [(c.id, c.type, c.source, c.execution_count) for c in from_json.cells] == [
        (c.id, c.type, c.source, c.execution_count) for c in from_file.cells
    ]
    assert from_json.active_cell_id == raw["cells"][6]["id"]
    # rendering treats list-of-lines outputs (browser JSON) and joined strings (nbformat) the same
    assert [render_outputs(c) for c in from_json.cells] == [render_outputs(c) for c in from_file.cells]


def test_snapshot_from_json_is_lenient_but_rejects_non_notebooks() -> None:
    snap = snapshot_from_json({"cells": [{"source": ["a\n", "b"]}, {"cell_type": "markdown", "source": "# t"}]})
    assert [(c.id, c.type, c.source) for c in snap.cells] == [("cell-0", "code", "a\nb"), ("cell-1", "markdown", "# t")]
    with pytest.raises(NotebookError, match="'cells' list"):
        snapshot_from_json({"nope": 1})


def test_snapshot_backend_applies_in_memory() -> None:
    backend = SnapshotNotebook.from_json({"cells": [{"id": "a", "source": "x = 1"}]})
    backend.apply(Proposal("replace", "a", "x = 1", "x = 2", ""))
    assert backend.snapshot().cells[0].source == "x = 2"
    with pytest.raises(ToolError):
        backend.inspect_variable("x")


def test_apply_to_snapshot_clears_outputs_of_changed_code_cells(analysis: Path) -> None:
    snapshot = FileNotebook.load(analysis).snapshot()
    cell = snapshot.cells[2]
    changed = apply_to_snapshot(snapshot, edit(cell, "readings = []"))
    assert changed.cells[2].outputs == () and changed.cells[2].execution_count is None
    assert snapshot.cells[2].outputs  # the original snapshot is untouched


# -------------------------------------------------------------------------------------------------- rendering


def test_error_output_renders_as_name_value_and_clean_traceback(analysis: Path) -> None:
    cell = FileNotebook.load(analysis).snapshot().cells[6]
    text = render_outputs(cell)
    assert text.startswith("JSONDecodeError: Expecting ',' delimiter: line 1 column 30 (char 29)\n")
    assert "\x1b" not in text and "-----" not in text
    assert "Cell In[5], line 1" in text
    assert "[... 1 library frames omitted ...]" in text  # json/__init__ and raw_decode kept, decode collapsed
    assert "json/__init__.py:346" in text and "decoder.py:353" in text and "decoder.py:337" not in text
    assert text.count("Expecting ',' delimiter") == 1  # the traceback's last line does not repeat the headline


def test_clean_traceback_plain_python_string() -> None:
    frames = "".join(f'  File "/usr/lib/python3/site-packages/lib{i}.py", line {i}, in f{i}\n    call()\n'
                     for i in range(6))
    tb = f'Traceback (most recent call last):\n  File "/home/u/app.py", line 3, in <module>\n    main()\n{frames}' \
         "ValueError: bad"
    text = clean_traceback(tb)
    assert 'File "/home/u/app.py"' in text
    assert "lib0.py" in text and "lib5.py" in text and "lib3.py" not in text
    assert "[... 4 library frames omitted ...]" in text
    assert render_error("ValueError", "bad", tb).startswith("ValueError: bad\nTraceback")
    assert not render_error("ValueError", "bad", tb).endswith("ValueError: bad\nValueError: bad")


def test_stream_ansi_and_progress_bars_are_cleaned() -> None:
    assert strip_ansi("\x1b[32mbatch 0\x1b[0m ok") == "batch 0 ok"
    assert strip_ansi(" 10%|#\r 50%|#####\r100%|##########\ndone\r\n") == "100%|##########\ndone\n"


def test_long_outputs_are_truncated_with_a_marker() -> None:
    text = "".join(f"line {i}\n" for i in range(5000))
    cell = Cell("a", "code", "print(...)", ({"output_type": "stream", "name": "stdout", "text": text},), 1)
    out = render_outputs(cell, limit=1000)
    assert len(out) < 1100
    assert out.startswith("line 0\n") and out.rstrip().endswith("line 4999")
    cut = int(out.split("[... ")[1].split(" characters cut")[0].replace(",", ""))
    assert cut + len(out) - len(f"\n[... {cut:,} characters cut ...]\n") == pytest.approx(len(text.rstrip("\n")), abs=2)


def test_images_html_and_summaries(analysis: Path) -> None:
    snapshot = FileNotebook.load(analysis).snapshot()
    plot = snapshot.cells[4]
    assert "[image/png image, view_image output_index=0]" in render_outputs(plot)
    assert "<Figure size 300x200 with 1 Axes>" in render_outputs(plot)
    html = Cell("h", "code", "df", ({"output_type": "execute_result", "data": {"text/html": "<b>hi</b>"},
                                     "metadata": {}, "execution_count": 1},), 1)
    assert render_outputs(html) == "hi"
    assert cell_summary(snapshot.cells[6], 6) == (
        f"#6 id={snapshot.cells[6].id} code [5]: config = json.loads('{{\"threshold\": 21, \"unit\": \"C\"')  (+1 lines)"
        "  [error: JSONDecodeError: Expecting ',' delimiter: line 1 column 30 (char 29)]"
    )
    assert cell_summary(Cell("e", "code", ""), 0) == "#0 id=e code: (empty)"
    full = render_cell(snapshot.cells[2], 2)
    assert full.startswith(f"#2 id={snapshot.cells[2].id} code [2]\n```python\nrng = ")
    assert "Output:\n```\narray([20.25146044" in full
    assert render_cell(Cell("n", "code", "x = 1"), 0).endswith("(not executed)")
