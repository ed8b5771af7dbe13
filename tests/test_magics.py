"""%%kimi / %kimi in-process (IPython InteractiveShell) and in real kernels against a ScriptedServer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from kimi_nb.kernel_notebook import execution_count_of
from kimi_nb.magics_session import last_code_block

FAKE_KEY = "sk-kimitest-DISTINCTIVE-9f3a7c1e5b"


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext kimi_nb", store_history=True)
    yield ip
    ip.run_cell("%unload_ext kimi_nb")


def run(ip: InteractiveShell, source: str):
    return ip.run_cell(source, store_history=True)


def test_load_registers_line_and_cell_magic(shell):
    assert "kimi" in shell.magics_manager.magics["line"]
    assert "kimi" in shell.magics_manager.magics["cell"]


def test_cell_magic_help_lists_every_option(shell):
    doc = shell.find_cell_magic("kimi").__doc__
    for option in ("--cells", "--no-context", "--image", "--model", "--max-tokens", "--think", "--no-think",
                   "--format"):
        assert option in doc
    assert "fix" in shell.find_line_magic("kimi").__doc__


def test_interpolates_variables_and_history(shell):
    from kimi_nb.magics import interpolate

    run(shell, "answer_value = 42")
    result = run(shell, "answer_value * 2")
    count = result.execution_count
    failed = run(shell, "1 / 0")
    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    text = interpolate(f"v={{answer_value}} in={{In[{count}]}} out={{Out[{count}]}} err={{Err[{failed.execution_count}]}}"
                       " keep={unknown_name} {{answer_value}} {d[0]}", shell.user_ns, notebook)
    assert text.startswith("v=42 in=answer_value * 2 out=84 err=")
    assert "ZeroDivisionError" in text
    assert text.endswith("keep={unknown_name} {answer_value} {d[0]}")


@pytest.mark.parametrize("field, message", [("{In[999]}", r"no cell In\[999\]"), ("{Err[1]}", "raised no error")])
def test_bad_history_reference_is_a_usage_error(shell, field, message):
    from kimi_nb.magics import interpolate

    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    with pytest.raises(UsageError, match=message):
        interpolate(field, shell.user_ns, notebook)


@pytest.mark.parametrize("line", ["--format yaml", "-t many", "--bogus"])
def test_bad_options_are_usage_errors(shell, line, capsys):
    result = run(shell, f"%%kimi {line}\nhello")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in capsys.readouterr().out


def test_bad_subcommand_arguments_are_usage_errors(shell):
    for line in ("%kimi memory rename x", "%kimi memory show", "%kimi engine launch", "%kimi config extra"):
        assert isinstance(run(shell, line).error_in_exec, UsageError), line


def test_config_masks_the_key(shell, capsys, monkeypatch):
    monkeypatch.setenv("KIMI_API_KEY", FAKE_KEY)
    magics = shell.magics_manager.registry["KimiMagics"]
    magics.session._settings = None
    run(shell, "%kimi config")
    out = capsys.readouterr().out
    magics.session._settings = None
    assert "api_key = 'sk-…(" in out and FAKE_KEY not in out and "model = " in out


def test_cells_option_takes_slices_and_ids(shell):
    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    for code in ("a1 = 1", "a2 = 2", "a3 = 3"):
        run(shell, code)
    past = notebook.past_counts()
    assert notebook.select("-2:") == past[-2:]
    assert notebook.select(f"In[{past[0]}], {past[1]}") == [past[0], past[1]]
    with pytest.raises(Exception, match="not a cell id"):
        notebook.select("first")
    assert execution_count_of("In[ 7 ]") == 7


def test_snapshot_has_sources_results_and_errors_but_not_kimi_cells(shell):
    run(shell, "%kimi config")
    ok = run(shell, "snap_value = [1, 2, 3]\nsnap_value")
    bad = run(shell, "undefined_thing + 1")
    snapshot = shell.magics_manager.registry["KimiMagics"].notebook.snapshot()
    by_id = {cell.id: cell for cell in snapshot.cells}
    assert by_id[f"In[{ok.execution_count}]"].outputs[0]["data"]["text/plain"] == "[1, 2, 3]"
    error = by_id[f"In[{bad.execution_count}]"].outputs[-1]
    assert error["ename"] == "NameError" and any("undefined_thing" in line for line in error["traceback"])
    assert not any(cell.source.startswith("%kimi") for cell in snapshot.cells)


def test_inspect_variable_only_looks_up_names(shell):
    from kimi_nb.errors import ToolError

    run(shell, "inspect_me = list(range(1000))")
    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    text = notebook.inspect_variable("inspect_me")
    assert text.startswith("inspect_me: list, len=1000 = [0, 1, 2") and "chars)" in text
    for name in ("__import__('os').getcwd()", "inspect_me.pop", "no_such_variable"):
        with pytest.raises(ToolError):
            notebook.inspect_variable(name)
    assert len(shell.user_ns["inspect_me"]) == 1000


@pytest.mark.parametrize("answer, code", [
    ("Here:\n```python\nx = 1\n```\n", "x = 1"),
    ("```bash\nls\n```\nthen\n```python\ny = 2\nprint(y)\n```", "y = 2\nprint(y)"),
    ("```\nz = 3\n```", "z = 3"),
    ("no code at all", None),
])
def test_last_code_block(answer, code):
    assert last_code_block(answer) == code


def test_unload_removes_the_magics():
    ip = InteractiveShell.instance()
    if "KimiMagics" not in ip.magics_manager.registry:
        ip.run_cell("%load_ext kimi_nb")
    ip.run_cell("%unload_ext kimi_nb")
    assert "kimi" not in ip.magics_manager.magics["cell"]
    ip.run_cell("%load_ext kimi_nb")
    assert "kimi" in ip.magics_manager.magics["cell"]


def test_loading_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        import kimi_nb
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "kimi_nb")
        assert "kimi" in ip.magics_manager.magics["cell"]
        heavy = ["openai", "nbclient", "jupyter_server", "tornado", "rich", "ipywidgets", "httpx", "matplotlib"]
        print(json.dumps([name for name in heavy if name in sys.modules]))
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
