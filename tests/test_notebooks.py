"""The tour notebooks run top to bottom in real kernels (nbclient), replaying their scripts, so they never rot;
the broken sample notebooks are repaired by the real `kimi-nb repair` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TOUR = ["01_quickstart", "02_fix_a_traceback", "03_plot_to_code", "04_launch_vllm"]
MODEL_ENV = ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED",
             "KIMI_FAKE_VLLM_SCRIPT")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


class Run:
    """One executed tour notebook: its cells with outputs, the cells it asked the front end to insert, and
    the text of its widgets (the diffs)."""

    def __init__(self, name: str) -> None:
        self.nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        self.new_cells: list[str] = []
        client = NotebookClient(self.nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}}, on_cell_executed=self._executed)
        client.execute()

    def _executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        for payload in (execute_reply or {}).get("content", {}).get("payload", []):
            if payload.get("source") == "set_next_input":
                self.new_cells.append(payload["text"])

    def output_text(self, index: int) -> str:
        """Everything cell ``index`` showed, as text (stream, markdown, plain text, errors)."""
        parts = []
        for output in self.nb.cells[index].get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
            parts += [output.get("ename", ""), output.get("evalue", "")]
        return "\n".join(parts)

    def index(self, start: str) -> int:
        return next(i for i, cell in enumerate(self.nb.cells) if cell.source.startswith(start))

    def widget_text(self) -> str:
        state = self.nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        return "\n".join(str(model.get("state", {}).get("value", "")) for model in state.values())


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    """Every tour notebook executed once, with no model configured (as on Binder)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in MODEL_ENV:
            patch.delenv(name, raising=False)
        return {name: Run(name) for name in TOUR}


def test_tour_notebooks_are_stored_clean_and_valid() -> None:
    for name in TOUR:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
        assert all(not cell.get("outputs") and cell.get("execution_count") is None
                   for cell in nb.cells if cell.cell_type == "code"), f"{name} is stored with outputs"


@pytest.mark.parametrize("name", TOUR)
def test_tour_notebook_runs_without_unexpected_errors(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    for index, cell in enumerate(run.nb.cells):
        if cell.cell_type != "code":
            continue
        expected = "raises-exception" in cell.metadata.get("tags", [])
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert bool(errors) == expected, f"{name} cell {index}: {run.output_text(index)[:500]}"
        if not expected:
            assert "Traceback" not in run.output_text(index)
            assert "kimi-nb:" not in run.output_text(index), run.output_text(index)  # a one-line failure


def test_quickstart_writes_a_new_cell_and_proposes_a_diff(runs: dict[str, Run]) -> None:
    run = runs["01_quickstart"]
    asked = run.output_text(run.index("%%kimi\nPlot"))
    assert "warmest day" in asked
    assert any("plt.bar(" in source for source in run.new_cells), run.new_cells
    assert "temperatures_f" in run.widget_text()  # the diff shown with Accept / Reject
    assert "Accept" in json.dumps(run.nb.metadata["widgets"])


def test_fix_a_traceback_proposes_the_fixed_cell(runs: dict[str, Run]) -> None:
    run = runs["02_fix_a_traceback"]
    failed = run.nb.cells[run.index("total = sum(")]
    assert failed.outputs[-1].ename == "TypeError"
    assert "int(quantity)" in run.output_text(run.index("%kimi fix")) + run.widget_text()
    assert "price * int(quantity) for" in run.widget_text()


def test_plot_to_code_sends_the_figure_and_gets_a_new_cell(runs: dict[str, Run]) -> None:
    run = runs["03_plot_to_code"]
    plot = run.nb.cells[run.index("import matplotlib")]
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    assert "attach" not in run.output_text(run.index("%%kimi")).lower()  # no "no figure to attach" failure
    assert any("envelope" in source and "plt.legend()" in source for source in run.new_cells), run.new_cells


def test_launch_vllm_says_it_uses_the_stand_in(runs: dict[str, Run]) -> None:
    run = runs["04_launch_vllm"]
    if not (shutil.which("vllm") and shutil.which("nvidia-smi")):
        assert "stand-in vllm" in run.output_text(run.index("%load_ext"))
        assert "stand-in vllm" in run.output_text(run.index("%%kimi"))
    assert "Ready" in run.output_text(run.index("%kimi engine launch"))
    assert "launched vLLM" in run.output_text(run.index("%kimi engine status"))
    assert "Stopped" in run.output_text(run.index("%kimi engine stop"))


def test_broken_notebooks_are_repaired_by_the_cli(tmp_path: Path) -> None:
    broken = NOTEBOOKS / "broken"
    originals = {path.name: path.read_bytes() for path in broken.glob("*.ipynb")}
    assert len(originals) >= 3 and (broken / "README.md").is_file()
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "kimi_nb.cli", "repair", str(broken), "--output-dir", str(tmp_path / "fixed"),
         "--engine", f"scripted:{NOTEBOOKS / 'scripts' / 'repair_broken.json'}", "--jobs", "3",
         "--report", str(report)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    statuses = {Path(item["path"]).name: item["status"] for item in json.loads(report.read_text())["notebooks"]}
    assert statuses == {name: "repaired" for name in originals}
    assert {path.name: path.read_bytes() for path in broken.glob("*.ipynb")} == originals
    for name in originals:
        fixed = nbformat.read(tmp_path / "fixed" / name, as_version=4)
        assert not [o for cell in fixed.cells for o in cell.get("outputs", []) if o.output_type == "error"]
