"""The repair engine for one notebook (real kernels, a real ScriptedServer over HTTP) and its output helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kimi_nb.notebook import FileNotebook
from kimi_nb.repair import RepairOptions, repair_notebook
from kimi_nb.repair_output import OutputPlan, Source, cell_diff, find_notebooks

BROKEN = Path(__file__).parent / "data" / "broken"


def edit(cell_id: str, old: str, new: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "edit_cell", "arguments": {"cell_id": cell_id, "old_text": old, "new_text": new}}]}


async def run_repair(path: Path, turns: list[dict[str, Any]], requests: list | None = None, **options: Any) -> Any:
    """Repair ``path`` against a ScriptedServer answering ``turns``; the requests it got go to ``requests``."""
    from kimi_nb.engine import RemoteEngine
    from kimi_nb.testing import ScriptedServer

    with ScriptedServer({"turns": turns}) as server:
        engine = RemoteEngine(server.base_url, model="kimi-k2.5", timeout=10, backoff=0.01, max_retries=0)
        try:
            return await repair_notebook(str(path), engine, RepairOptions(timeout=10, **options))
        finally:
            await engine.aclose()
            if requests is not None:
                requests.extend(server.requests)


# ------------------------------------------------------------------------------------------- kernels and model

TWO_BUGS_TURNS = [edit("make", "rang(5)", "range(5)"), {"content": "fixed"},
                  edit("pick", "xs[5]", "xs[-1]"), {"content": "fixed"}]


@pytest.mark.kernel
@pytest.mark.anyio
@pytest.mark.parametrize(("restart", "pick_count"), [(False, 5), (True, 3)])
async def test_re_executes_from_the_edited_cell_or_from_the_top(tmp_path: Path, restart: bool,
                                                                 pick_count: int) -> None:
    path = tmp_path / "two_bugs.ipynb"
    shutil.copy2(BROKEN / "two_bugs.ipynb", path)
    requests: list[dict[str, Any]] = []
    result = await run_repair(path, TWO_BUGS_TURNS, requests, restart=restart)
    assert (result.status, result.reason) == ("repaired", "runs after 2 attempts")
    second_attempt = requests[2]["messages"][-1]["content"]  # the model sees this run's outputs, not the file's
    assert "print(sum(xs))\n```\nOutput:\n```\n10\n```" in second_attempt
    assert [a.outcome for a in result.attempts] == ["still failing", "fixed"]
    # same kernel: make(1) fails, make(2) sum(3) pick(4) fails, pick(5); fresh kernel each time: make, sum, pick
    assert result.notebook.cell("pick")["execution_count"] == pick_count
    assert result.notebook.cell("pick")["outputs"][0]["text"] == "4\n"
    assert result.notebook.cell("sum")["execution_count"] is None  # untouched cells keep what the file had


@pytest.mark.kernel
@pytest.mark.anyio
async def test_gives_up_after_max_attempts_with_the_last_failure(tmp_path: Path) -> None:
    path = tmp_path / "typo.ipynb"
    shutil.copy2(BROKEN / "typo.ipynb", path)
    turns = [edit("show", "totl", "totall"), {"content": "try this"}, edit("show", "totall", "tootal"), {"content": "or this"}]
    result = await run_repair(path, turns, max_attempts=2)
    assert result.status == "failed"
    assert result.reason == "still failing after 2 attempts: cell 3 (show) failed: NameError: name 'tootal' is not defined"
    assert [a.failure.evalue for a in result.attempts] == ["name 'totl' is not defined", "name 'totall' is not defined"]
    assert result.usage.prompt_tokens > 0


@pytest.mark.kernel
@pytest.mark.anyio
async def test_an_engine_failure_is_an_error_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.ipynb"
    shutil.copy2(BROKEN / "typo.ipynb", path)
    result = await run_repair(path, [{"fault": {"http": 401, "message": "Incorrect API key provided."}}])
    assert result.status == "error"
    assert result.reason.startswith("model request failed: ") and "\n" not in result.reason
    assert result.attempts[0].outcome == "model error"
    assert not result.changed


@pytest.mark.kernel
@pytest.mark.anyio
async def test_notebook_without_cell_ids_is_repaired_and_written_without_ids(tmp_path: Path) -> None:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("# old format"), new_code_cell("x = 1"), new_code_cell("print(y)")])
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(nb).rstrip("\n") + "\n")  # as Jupyter writes it
    original = path.read_text()
    result = await run_repair(path, [edit("cell-2", "print(y)", "print(x)"), {"content": "use x"}])
    assert result.status == "repaired"
    target = OutputPlan().write(Source(str(path), "old.ipynb"), result.notebook)
    written = json.loads(Path(target).read_text())
    assert written["nbformat_minor"] == 4 and all("id" not in cell for cell in written["cells"])
    assert written["cells"][2]["outputs"][0]["text"] == ["1\n"]
    written["cells"][2] = json.loads(original)["cells"][2]
    assert json.dumps(written, indent=1, sort_keys=True, ensure_ascii=False) + "\n" == original


# -------------------------------------------------------------------------------------------- output helpers

def test_find_notebooks_recurses_and_skips_checkpoints_and_outputs(tmp_path: Path) -> None:
    for name in ("a.ipynb", "sub/b.ipynb", "sub/.ipynb_checkpoints/b-checkpoint.ipynb", "a.repaired.ipynb",
                 ".hidden/c.ipynb", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = list(find_notebooks([str(tmp_path), str(tmp_path / "a.ipynb")]))
    assert [(Path(s.path).relative_to(tmp_path).as_posix(), s.relative) for s in found] == [
        ("a.ipynb", "a.ipynb"), ("sub/b.ipynb", "sub/b.ipynb")]


@pytest.mark.parametrize(
    ("plan", "expected"),
    [(OutputPlan(), "nbs/sub/x.repaired.ipynb"), (OutputPlan(in_place=True), "nbs/sub/x.ipynb"),
     (OutputPlan(directory="out"), "out/sub/x.ipynb")],
)
def test_output_targets(plan: OutputPlan, expected: str) -> None:
    assert plan.target(Source("nbs/sub/x.ipynb", "sub/x.ipynb")) == expected


def test_cell_diff_shows_edited_inserted_and_deleted_cells_only() -> None:
    from kimi_nb.tools import Proposal

    notebook = FileNotebook.load(BROKEN / "typo.ipynb")
    before = notebook.snapshot()
    notebook.apply(Proposal("edit", "show", before.cells[2].source, "print(total * 2)", ""))
    notebook.apply(Proposal("insert", "new1", "", "total += 0", "", "code", "setup"))
    notebook.apply(Proposal("delete", "check", "assert total == 6", "", ""))
    diff = cell_diff("typo.ipynb", before, notebook.snapshot())
    assert "cell setup" not in diff and "cell intro" not in diff
    assert "--- a/typo.ipynb cell show\n+++ b/typo.ipynb cell show\n" in diff
    assert "-print(totl * 2)\n+print(total * 2)\n" in diff
    assert "--- /dev/null\n+++ b/typo.ipynb cell new1\n@@ -0,0 +1 @@\n+total += 0\n" in diff
    assert "--- a/typo.ipynb cell check\n+++ /dev/null\n@@ -1 +0,0 @@\n-assert total == 6\n" in diff


def test_loading_and_saving_an_untouched_notebook_is_byte_identical(tmp_path: Path) -> None:
    for path in sorted(BROKEN.rglob("*.ipynb")):
        if path.name in ("invalid.ipynb",):
            continue
        target = tmp_path / path.name
        FileNotebook.load(path).save(target)
        assert target.read_bytes() == path.read_bytes(), path.name
    assert nbformat.read(BROKEN / "typo.ipynb", 4).cells[0].attachments
