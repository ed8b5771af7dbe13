"""`kimi-nb repair` end to end: the real CLI in a subprocess, real kernels, the ScriptedServer answering with
real tool calls, on a corpus of genuinely broken notebooks (tests/data/broken)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import anyio
import nbformat
import pytest

DATA = Path(__file__).parent / "data"
BROKEN = DATA / "broken"
SCRIPT = DATA / "repair" / "corpus_script.json"
ENGINE = f"scripted:{SCRIPT}"
REPAIRED = {"api_drift", "hanging", "off_by_one", "two_bugs", "typo", "wrong_import"}

pytestmark = pytest.mark.kernel


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMI_") and k != "MOONSHOT_API_KEY"}
    env.pop("FORCE_COLOR", None)
    return env


def kimi(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kimi_nb.cli", "repair", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def copy_corpus(root: Path, *names: str) -> Path:
    """A copy of the corpus (or of some of its notebooks) under ``root/broken``."""
    target = root / "broken"
    if not names:
        shutil.copytree(BROKEN, target)
        return target
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BROKEN / name, target / name)
        helper = (BROKEN / name).parent / "stats_helpers.py"
        if helper.exists():
            shutil.copy2(helper, (target / name).parent / helper.name)
    return target


async def _execute(path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    await NotebookClient(nb, timeout=20, resources={"metadata": {"path": str(path.parent)}}).async_execute()


def execute_all(paths: list[Path]) -> None:
    """Run every notebook top to bottom in a fresh kernel (concurrently); raises on the first failure."""

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for path in paths:
                group.start_soon(_execute, path)

    anyio.run(main)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One CLI run over the whole corpus, two notebooks at a time (kernel starts are the slow part)."""
    root = tmp_path_factory.mktemp("corpus")
    corpus = copy_corpus(root)
    before = files(corpus)
    proc = kimi("broken", "--jobs", "2", "--timeout", "5", "--engine", ENGINE, "--report", "report.json", cwd=root)
    report = json.loads((root / "report.json").read_text())
    by_name = {Path(entry["path"]).stem: entry for entry in report["notebooks"]}
    return SimpleNamespace(root=root, corpus=corpus, before=before, proc=proc, report=report, by_name=by_name)


def test_corpus_statuses_reasons_and_exit_code(corpus_run: SimpleNamespace) -> None:
    run, by_name = corpus_run, corpus_run.by_name
    assert run.proc.returncode == 1, run.proc.stderr  # stubborn, invalid and no_kernel still fail
    assert "Traceback" not in run.proc.stderr + run.proc.stdout
    assert {name: entry["status"] for name, entry in by_name.items()} == {
        "clean": "ok", "invalid": "error", "no_kernel": "error", "stubborn": "failed",
        **{name: "repaired" for name in REPAIRED},
    }
    assert run.report["summary"] == {"ok": 1, "repaired": 6, "failed": 1, "error": 2}
    assert run.report["interrupted"] is False
    assert "not valid JSON" in by_name["invalid"]["reason"]
    assert "kernel 'kimi-nb-no-such-kernel' is not installed" in by_name["no_kernel"]["reason"]
    assert by_name["stubborn"]["reason"].startswith("the model proposed no change; cell 1 (load) failed")
    assert by_name["stubborn"]["failure"]["ename"] == "FileNotFoundError"
    for entry in by_name.values():  # every notebook has its clear line on screen too
        assert f"{entry['path']}: {entry['status']}" in run.proc.stdout


def test_attempts_record_cell_error_diff_tokens_and_durations(corpus_run: SimpleNamespace) -> None:
    two_bugs = corpus_run.by_name["two_bugs"]
    first, second = two_bugs["attempts"]
    assert (first["cell_id"], first["ename"], first["outcome"]) == ("make", "NameError", "still failing")
    assert "name 'rang' is not defined" in first["evalue"]
    assert "-xs = list(rang(5))" in first["diff"] and "+xs = list(range(5))" in first["diff"]
    assert first["next_failure"]["cell_id"] == "pick" and first["next_failure"]["ename"] == "IndexError"
    assert (second["cell_id"], second["ename"], second["outcome"]) == ("pick", "IndexError", "fixed")
    assert "+print(xs[-1])" in second["diff"]
    assert two_bugs["usage"]["prompt_tokens"] > 0 and two_bugs["usage"]["completion_tokens"] > 0
    assert two_bugs["durations"]["execute_seconds"] > 0 and two_bugs["durations"]["model_seconds"] > 0
    hanging = corpus_run.by_name["hanging"]["attempts"][0]
    assert hanging["evalue"] == "cell 2 timed out after 5 s"
    wrong_import = corpus_run.by_name["wrong_import"]["attempts"][0]
    assert [p["cell_id"] for p in wrong_import["proposals"]] == ["imports", "use"]


def test_inputs_unchanged_and_outputs_next_to_them(corpus_run: SimpleNamespace) -> None:
    after = files(corpus_run.corpus)
    assert {name: after[name] for name in corpus_run.before} == corpus_run.before
    written = sorted(set(after) - set(corpus_run.before))
    expected = sorted(("drift/" if name == "api_drift" else "") + f"{name}.repaired.ipynb" for name in REPAIRED)
    assert written == expected
    for name in REPAIRED:
        assert corpus_run.by_name[name]["output"].endswith(f"{name}.repaired.ipynb")


def test_repaired_notebooks_execute_cleanly(corpus_run: SimpleNamespace) -> None:
    execute_all(sorted(corpus_run.corpus.rglob("*.repaired.ipynb")))


def test_untouched_cells_and_metadata_are_byte_stable(corpus_run: SimpleNamespace) -> None:
    original_text = (corpus_run.corpus / "typo.ipynb").read_text(encoding="utf-8")
    repaired_text = (corpus_run.corpus / "typo.repaired.ipynb").read_text(encoding="utf-8")
    original, repaired = json.loads(original_text), json.loads(repaired_text)
    show = next(cell for cell in repaired["cells"] if cell["id"] == "show")
    assert "".join(show["source"]) == "# typo.ipynb: the name is misspelt\nprint(total * 2)"
    assert show["outputs"] == [{"name": "stdout", "output_type": "stream", "text": ["12\n"]}]
    # putting the original cell back gives the original file, byte for byte: nothing else moved
    repaired["cells"] = [next(c for c in original["cells"] if c["id"] == "show") if c["id"] == "show" else c
                         for c in repaired["cells"]]
    assert json.dumps(repaired, indent=1, sort_keys=True, ensure_ascii=False) + "\n" == original_text
    assert original["cells"][0]["attachments"]["dot.png"]["image/png"].startswith("iVBOR")


def test_check_executes_and_reports_without_a_model(tmp_path: Path) -> None:
    copy_corpus(tmp_path, "typo.ipynb", "no_kernel.ipynb")
    before = files(tmp_path / "broken")
    env = {**_env(), "KIMI_BASE_URL": "http://127.0.0.1:9/v1"}  # unreachable: --check must not call it
    proc = kimi("broken", "--check", "--kernel", "python3", "--report", "check.json", cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "check.json").read_text())
    entries = {Path(e["path"]).stem: e for e in report["notebooks"]}
    assert entries["no_kernel"]["status"] == "ok"  # --kernel overrides the notebook's missing kernelspec
    typo = entries["typo"]
    assert typo["status"] == "failed" and typo["attempts"] == []
    assert (typo["failure"]["cell_id"], typo["failure"]["ename"]) == ("show", "NameError")
    assert "totl" in typo["failure"]["traceback"] and "\x1b[" not in typo["failure"]["traceback"]
    assert report["engine"] is None
    assert files(tmp_path / "broken") == before


def test_diff_prints_coloured_changes_and_writes_nothing(tmp_path: Path) -> None:
    copy_corpus(tmp_path, "typo.ipynb")
    before = files(tmp_path / "broken")
    proc = kimi("broken", "--diff", "--engine", ENGINE, cwd=tmp_path, env={**_env(), "FORCE_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout)
    assert "--- a/broken/typo.ipynb cell show" in plain and "+++ b/broken/typo.ipynb cell show" in plain
    assert "-print(totl * 2)" in plain and "+print(total * 2)" in plain
    assert "\x1b[32m+print(total * 2)" in proc.stdout and "\x1b[31m-print(totl * 2)" in proc.stdout
    assert files(tmp_path / "broken") == before


def test_in_place_keeps_a_backup_unless_told_not_to(tmp_path: Path) -> None:
    folder = copy_corpus(tmp_path, "typo.ipynb", "off_by_one.ipynb")
    typo, off = folder / "typo.ipynb", folder / "off_by_one.ipynb"
    original_typo, original_off = typo.read_bytes(), off.read_bytes()
    proc = kimi("broken/typo.ipynb", "--in-place", "--engine", ENGINE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (folder / "typo.ipynb.bak").read_bytes() == original_typo
    assert "print(total * 2)" in "".join(nbformat.read(typo, 4).cells[2].source)
    proc = kimi("broken/off_by_one.ipynb", "--in-place", "--no-backup", "--engine", ENGINE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert off.read_bytes() != original_off
    assert sorted(p.name for p in folder.iterdir()) == ["off_by_one.ipynb", "typo.ipynb", "typo.ipynb.bak"]
    execute_all([typo, off])


def test_output_dir_keeps_relative_paths(tmp_path: Path) -> None:
    copy_corpus(tmp_path, "typo.ipynb", "drift/api_drift.ipynb")
    before = files(tmp_path / "broken")
    proc = kimi("broken", "-o", "out", "--jobs", "2", "--engine", ENGINE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(files(tmp_path / "out")) == ["drift/api_drift.ipynb", "typo.ipynb"]
    assert files(tmp_path / "broken") == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-backup", "x.ipynb"], "--no-backup only makes sense with --in-place"),
        (["missing.ipynb", "--check"], "no such file or folder: missing.ipynb"),
        (["empty", "--check"], "no notebooks (*.ipynb) found in empty"),
        (["x.ipynb", "--engine", "openai:x"], "--engine takes scripted:SCRIPT.json"),
        (["x.ipynb"], "no model endpoint configured"),
        (["x.ipynb", "--api-key-env", "KIMI_NB_TEST_UNSET"], "KIMI_NB_TEST_UNSET: that environment variable is not set"),
        (["x.ipynb", "--jobs", "0"], "must be positive"),
        (["x.ipynb", "--in-place", "--diff"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy2(BROKEN / "clean.ipynb", tmp_path / "x.ipynb")
    proc = kimi(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def _kernels_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` (the kernels kimi-nb started there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == folder:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_ctrl_c_stops_cleanly_with_a_partial_report(tmp_path: Path) -> None:
    folder = copy_corpus(tmp_path, "hanging.ipynb", "typo.ipynb").resolve()
    before = files(folder)
    child = subprocess.Popen(
        [sys.executable, "-m", "kimi_nb.cli", "repair", "broken/hanging.ipynb", "broken/typo.ipynb",
         "--timeout", "120", "--engine", ENGINE, "--report", "partial.json"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # the hanging cell is running: interrupt like Ctrl+C does
            if "hanging.ipynb: running cell 2/2" in line:
                break
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    report = json.loads((tmp_path / "partial.json").read_text())
    assert report["interrupted"] is True
    entries = {Path(e["path"]).stem: (e["status"], e["reason"]) for e in report["notebooks"]}
    assert entries["hanging"] == ("error", "interrupted while running cell 2/2")
    assert entries["typo"] in {("error", "interrupted while starting kernel"),  # started ahead of its turn
                               ("error", "interrupted while waiting for a free job slot")}
    assert files(folder) == before
    deadline = time.monotonic() + 10
    while _kernels_in(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _kernels_in(folder) == []


WRITER = """
import sys
from kimi_nb.notebook import FileNotebook
from kimi_nb.repair_output import OutputPlan, Source
path = sys.argv[1]
notebook = FileNotebook.load(path)
plan = OutputPlan(in_place=True, backup=True)
cell = notebook.nb.cells[0]
for round in range(1000):
    cell["source"] = "x = %d" % round
    print("writing", round, flush=True)
    plan.write(Source(path, "big.ipynb"), notebook)
"""


def test_a_kill_during_an_in_place_write_leaves_a_whole_notebook(tmp_path: Path) -> None:
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    blob = "x" * 2_000_000
    cells = [new_code_cell("x = 0")] + [
        new_code_cell(f"print({i})", outputs=[new_output("stream", name="stdout", text=blob)]) for i in range(12)
    ]
    path = tmp_path / "big.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    original = path.read_bytes()
    for kill_after in (1, 2, 3):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        for _ in range(kill_after):
            child.stdout.readline()
        child.kill()  # SIGKILL: no cleanup runs, as when the machine dies
        child.wait()
        nb = nbformat.read(path, as_version=4)  # whole and valid: the old or a new version, never half of one
        nbformat.validate(nb)
        assert re.fullmatch(r"x = \d+", nb.cells[0].source)
        assert [cell.outputs[0].text == blob for cell in nb.cells[1:]] == [True] * 12
    assert len(original) > 24_000_000


def test_launch_vllm_serves_the_run(tmp_path: Path) -> None:
    copy_corpus(tmp_path, "off_by_one.ipynb")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vllm"  # kimi-nb's stand-in vllm, found on PATH as the real one would be
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kimi_nb.testing.fake_vllm "$@"\n')
    shim.chmod(0o755)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KIMI_FAKE_VLLM_SCRIPT": str(SCRIPT)}
    proc = kimi("broken", "--launch-vllm", "moonshotai/Kimi-K2.5", "--report", "r.json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert "moonshotai/Kimi-K2.5" in report["engine"]
    assert [e["status"] for e in report["notebooks"]] == ["repaired"]
