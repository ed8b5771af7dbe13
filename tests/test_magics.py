"""%%kimi / %kimi in-process (IPython InteractiveShell) and in real kernels against a ScriptedServer."""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient

from kimi_nb.kernel_notebook import execution_count_of
from kimi_nb.magics_session import last_code_block
from kimi_nb.testing import ScriptedServer

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

    run(shell, "inspect_me = list(range(1000))\nimport fractions\nhalf = fractions.Fraction(1, 2)")
    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    text = notebook.inspect_variable("inspect_me")
    assert text.startswith("inspect_me: list, len=1000 = [0, 1, 2") and "chars)" in text
    assert notebook.inspect_variable("half.denominator") == "half.denominator: int = 2"
    for name in ("__import__('os').getcwd()", "inspect_me.__class__", "half.nope", "no_such_variable", "In"):
        with pytest.raises(ToolError):
            notebook.inspect_variable(name)
    assert len(shell.user_ns["inspect_me"]) == 1000


def test_last_figure_falls_back_to_the_open_pyplot_figure(shell):
    notebook = shell.magics_manager.registry["KimiMagics"].notebook
    run(shell, "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])")
    try:
        png = notebook.last_figure()
    finally:
        run(shell, "plt.close('all')")
    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert notebook.last_figure() is None  # no figure open, none displayed


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


# -- in-process requests against a ScriptedServer ------------------------------------------------------------------

@pytest.fixture()
def scripted(shell):
    """A ScriptedServer the in-process shell uses (through %kimi engine use), answering queued turns."""
    queued = collections.deque()
    with ScriptedServer(responder=lambda body: queued.popleft() if queued else {"content": "(nothing queued)"}) as srv:
        run(shell, f"%kimi engine use {srv.base_url} --model kimi-test")
        yield srv, queued
    magics = shell.magics_manager.registry["KimiMagics"]
    magics.session.overrides.clear()
    magics.session._settings = None


def test_in_process_code_answer_becomes_next_input(shell, scripted, capsys):
    server, queued = scripted
    queued.append({"content": "Sure:\n```python\nprint('hi')\n```"})
    shell.rl_next_input = None
    result = run(shell, "%%kimi -f code -c -2: -t 300 --no-think\nsay hi")
    assert result.error_in_exec is None
    assert shell.rl_next_input == "print('hi')"
    body = server.requests[-1]
    assert body["model"] == "kimi-test" and body["max_tokens"] == 300
    assert "say hi" in json.dumps(body["messages"]) and "```python" in json.dumps(body["messages"])
    assert "Sure:" in capsys.readouterr().out


def test_in_process_code_format_without_code_says_so(shell, scripted, capsys):
    _, queued = scripted
    queued.append({"content": "I would rather explain."})
    shell.rl_next_input = None
    run(shell, "%%kimi -f code\nsay hi")
    assert shell.rl_next_input is None
    assert "the answer has no code block" in capsys.readouterr().out


def test_in_process_line_question_and_engine_status(shell, scripted, capsys):
    server, queued = scripted
    queued.append({"content": "It holds 42."})
    run(shell, "what_is_it = 42")
    run(shell, "%kimi what's in {what_is_it}?")
    assert "what's in 42?" in json.dumps(server.requests[-1]["messages"])
    run(shell, "%kimi engine status")
    out = capsys.readouterr().out
    assert "It holds 42." in out and server.base_url in out and "kimi-test" in out


def test_in_process_unreachable_endpoint_is_one_line(shell, capsys):
    run(shell, "%kimi engine use http://127.0.0.1:9/v1")
    try:
        result = run(shell, "%%kimi --no-context\nhello")
    finally:
        magics = shell.magics_manager.registry["KimiMagics"]
        magics.session.overrides.clear()
        magics.session._settings = None
    out = capsys.readouterr()
    assert result.error_in_exec is None
    assert "kimi-nb:" in out.out and "127.0.0.1:9" in out.out and "Traceback" not in out.out + out.err


def test_in_process_image_without_a_figure_is_one_line(shell, scripted, capsys):
    server, _ = scripted
    before = len(server.requests)
    result = run(shell, "%%kimi --image\nwhat does the plot show?")
    assert result.error_in_exec is None and len(server.requests) == before
    assert "kimi-nb: --image: there is no figure to attach" in capsys.readouterr().out


def test_in_process_memory_commands(shell, tmp_path, capsys):
    from kimi_nb.memory import MemoryStore

    magics = shell.magics_manager.registry["KimiMagics"]
    shell.config.KimiNB.memory_dir = str(tmp_path)  # c.KimiNB.* in ipython_config.py
    magics.session._settings = None
    try:
        store = MemoryStore(tmp_path)
        store.create("plot-style", "seaborn, large fonts")
        store.create("units", "metric")
        run(shell, "%kimi memory list")
        run(shell, "%kimi memory show units")
        run(shell, "%kimi memory forget units")
        assert [m.key for m in store.list()] == ["plot-style"]
        run(shell, "%kimi memory show units")
        run(shell, "%kimi memory clear")
        assert store.list() == []
    finally:
        del shell.config.KimiNB["memory_dir"]
        magics.session._settings = None
    out = capsys.readouterr().out
    assert "plot-style: seaborn, large fonts" in out and "units (updated " in out and "Forgot units." in out
    assert out.count("kimi-nb:") == 1  # showing a forgotten key is one error line


def test_in_process_fix_answered_with_a_code_block_shows_a_diff(shell, scripted, capsys):
    server, queued = scripted
    run(shell, "values = [1, 2]")
    failing = run(shell, "mean = sum(values) / length").execution_count
    queued.append({"content": "Use len:\n```python\nmean = sum(values) / len(values)\n```"})
    run(shell, "%kimi fix -m kimi-fixer")
    sent = json.dumps(server.requests[-1])
    assert "NameError" in sent and "mean = sum(values) / length" in sent and "values: list, len=2" in sent
    assert server.requests[-1]["model"] == "kimi-fixer"
    out = capsys.readouterr().out
    assert f"Proposed replace of In[{failing}]" in out
    assert "-mean = sum(values) / length" in out and "+mean = sum(values) / len(values)" in out
    queued.append({"content": "`length` was never defined."})
    run(shell, "%kimi explain")
    assert "Explain why cell" in json.dumps(server.requests[-1]["messages"])
    out = capsys.readouterr().out
    assert "never defined" in out and "Proposed" not in out


def test_in_process_engine_launch_uses_and_stops_the_server(shell, capsys):
    magics = shell.magics_manager.registry["KimiMagics"]
    fake_vllm = f"{sys.executable} -m kimi_nb.testing.fake_vllm"
    try:
        run(shell, f'%kimi engine launch moonshotai/Kimi-K2.5 --vllm "{fake_vllm}" -- --served-model-name kimi-local')
        launcher = magics.session.launcher
        assert launcher is not None and launcher.running
        assert magics.session.settings.base_url == launcher.base_url
        assert magics.session.settings.model == "kimi-local" and magics.session.settings.api_key == ""
        run(shell, "%kimi engine status")
        run(shell, "%kimi engine stop")
        assert magics.session.launcher is None and not launcher.running
    finally:
        magics.session.close()
        magics.session.overrides.clear()
        magics.session._settings = None
    out = capsys.readouterr().out
    assert "Starting vLLM for moonshotai/Kimi-K2.5" in out and "Ready: " in out and "launched vLLM:" in out
    assert "Stopped the vLLM server." in out


# -- real kernels ------------------------------------------------------------------------------------------------
# One kernel for the rest of the module, talking to one ScriptedServer whose answers each test queues.


#: A 1x1 PNG, displayed in the kernel as "the last figure".
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005"
    "0001ff5f8e3b0b0000000049454e44ae426082")).decode()


class Kernel:
    """A kernel run through nbclient, one cell at a time, keeping every reply and output."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client
        self.replies: list[dict] = []
        client.on_cell_executed = lambda cell, cell_index, execute_reply: self.replies.append(execute_reply)

    def run(self, source: str) -> tuple[list[dict], list[dict]]:
        """Execute one cell; return its outputs and the execute_reply payloads."""
        nb = self.client.nb
        nb.cells.append(nbformat.v4.new_code_cell(source))
        cell = self.client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        return cell.outputs, self.replies[-1]["content"].get("payload", [])

    def widget_models(self, model_name: str) -> list[dict]:
        return [state for state in self.client.widget_state.values() if state.get("_model_name") == model_name]


def markdown_of(outputs: list[dict]) -> str:
    return "\n".join(out.get("data", {}).get("text/markdown", "") for out in outputs)


def next_inputs(payloads: list[dict]) -> list[str]:
    return [p["text"] for p in payloads if p.get("source") == "set_next_input"]


@pytest.fixture(scope="module")
def turns():
    return collections.deque()


@pytest.fixture(scope="module")
def server(turns):
    with ScriptedServer(responder=lambda body: turns.popleft() if turns else {"content": "(nothing queued)"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def kernel(server, tmp_path_factory):
    env = {**os.environ, "KIMI_BASE_URL": server.base_url, "KIMI_API_KEY": FAKE_KEY, "KIMI_MODEL": "kimi-k2.5"}
    env.pop("KIMI_SCRIPTED", None)
    memory = tmp_path_factory.mktemp("memory")
    client = NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3", timeout=120, allow_errors=True,
                            store_widget_state=True, extra_arguments=[
                                f"--KimiNB.memory_dir={memory}",  # c.KimiNB.* reaches the magics' settings
                                "--InteractiveShellApp.extensions=kimi_nb"])  # loaded as a configured extension
    with client.setup_kernel(env=env):
        kernel = Kernel(client)
        yield kernel
        everything = json.dumps([c.get("outputs", []) for c in client.nb.cells]) + json.dumps(kernel.replies, default=str) \
            + json.dumps(client.widget_state)
        assert FAKE_KEY not in everything, "the API key appeared in a kernel output"


def test_kernel_format_code_becomes_the_next_input(kernel, server, turns):
    turns.append({"reasoning": "The user wants squares.", "content": "Here you go:\n```python\nsquares = [i * i for i in range(5)]\n```\n"})
    outputs, payloads = kernel.run("%%kimi -f code --no-context\nmake a list of squares")
    assert next_inputs(payloads) == ["squares = [i * i for i in range(5)]"]
    shown = markdown_of(outputs)
    assert "<details><summary>Thinking" in shown and "The user wants squares." in shown and "Here you go" in shown
    assert "tokens in" in shown
    assert server.requests[-1]["messages"][-1]["role"] == "user"
    assert not [o for o in outputs if o["output_type"] == "error"]


def test_kernel_edit_proposal_shows_a_diff_widget_and_accept_places_it(kernel, server, turns):
    outputs, _ = kernel.run("total = sum([1, 2, 3])\ntotal")
    target = kernel.client.nb.cells[-1].execution_count
    turns.append({"tool_calls": [{"name": "replace_cell", "arguments": {
        "cell_id": f"In[{target}]", "source": "total = sum([1, 2, 3, 4])\ntotal"}}]})
    turns.append({"content": "I added 4 to the list."})
    outputs, payloads = kernel.run("%%kimi\nadd 4 to the list")
    assert next_inputs(payloads) == []  # edits wait for Accept
    assert "→ replace_cell" in markdown_of(outputs) and "I added 4 to the list." in markdown_of(outputs)
    assert any(o["output_type"] == "display_data" and "application/vnd.jupyter.widget-view+json" in o["data"]
               for o in outputs)
    diffs = [m["value"] for m in kernel.widget_models("HTMLModel") if "sum([1, 2, 3, 4])" in m.get("value", "")]
    assert diffs and "background:#dafbe1" in diffs[-1]
    # Accept: a click on the button places the new source; it comes with the next execute_reply
    accept = next(comm_id for comm_id, state in kernel.client.widget_state.items()
                  if state.get("_model_name") == "ButtonModel" and state.get("description") == "Accept")
    kc = kernel.client.kc
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": accept, "data": {
        "method": "custom", "content": {"event": "click"}}}))
    _, payloads = kernel.run("pass")
    assert next_inputs(payloads) == ["total = sum([1, 2, 3, 4])\ntotal"]


def test_kernel_fix_sends_the_traceback_and_the_failing_cell(kernel, server, turns):
    kernel.run("prices = [3, 4]")
    kernel.run("average = sum(prices) / count_of_prices")
    failing = kernel.client.nb.cells[-1].execution_count
    turns.append({"tool_calls": [{"name": "edit_cell", "arguments": {
        "cell_id": f"In[{failing}]", "old_text": "count_of_prices", "new_text": "len(prices)"}}]})
    turns.append({"content": "`count_of_prices` is not defined; use `len(prices)`."})
    before = len(server.requests)
    kernel.run("%kimi fix")
    sent = json.dumps(server.requests[before]["messages"])
    assert "NameError" in sent and "count_of_prices" in sent and "average = sum(prices) / count_of_prices" in sent
    assert "prices: list, len=2 = [3, 4]" in sent
    diffs = [m["value"] for m in kernel.widget_models("HTMLModel") if "len(prices)" in m.get("value", "")]
    assert diffs, "no diff widget for the fix"


def test_kernel_image_option_sends_an_image_part(kernel, server, turns):
    kernel.run(f"from IPython.display import display\ndisplay({{'image/png': {PNG!r}}}, raw=True)")
    turns.append({"content": "A single pixel."})
    before = len(server.requests)
    outputs, _ = kernel.run("%%kimi --image -c -1:\nwhat does the plot show?")
    parts = [part for message in server.requests[before]["messages"] if isinstance(message.get("content"), list)
             for part in message["content"]]
    assert any(part.get("type") == "image_url" and part["image_url"]["url"] == f"data:image/png;base64,{PNG}"
               for part in parts)
    assert "A single pixel." in markdown_of(outputs)


def test_kernel_errors_are_one_line(kernel, server, turns):
    outputs, _ = kernel.run("%kimi engine use http://127.0.0.1:9/v1")
    try:
        outputs, _ = kernel.run("%%kimi\nhello?")
    finally:
        kernel.run(f"%kimi engine use {server.base_url}")
    text = json.dumps(outputs)
    assert "kimi-nb:" in text and "127.0.0.1:9" in text and "Traceback" not in text
    assert not [o for o in outputs if o["output_type"] == "error"]


def test_kernel_config_and_status_mask_the_key(kernel, server, tmp_path_factory):
    outputs, _ = kernel.run("%kimi config")
    text = json.dumps(outputs)
    assert "sk-\\u2026(" in text or "sk-…(" in text
    assert server.base_url in text and "memory" in text and str(tmp_path_factory.getbasetemp()) in text
    outputs, _ = kernel.run("%kimi engine status")
    assert "kimi-k2.5" in json.dumps(outputs)


def test_kernel_interrupt_cancels_cleanly(kernel, turns):
    from jupyter_core.utils import run_sync  # nbclient's kernel client and manager are async

    turns.append({"reasoning": "Long answer.", "content": "word " * 400, "chunk": 4, "fault": {"delay": 0.05}})
    kc, km = kernel.client.kc, kernel.client.km
    msg_id = kc.execute("%%kimi --no-context\nwrite a lot")

    def messages_of_this_cell():
        while True:
            msg = run_sync(kc.get_iopub_msg)(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id:
                yield msg

    shown = ""
    for msg in messages_of_this_cell():
        shown += json.dumps(msg["content"])
        if "word word" in shown:
            break
    run_sync(km.interrupt_kernel)()
    last = ""
    for msg in messages_of_this_cell():
        shown += json.dumps(msg["content"])
        last = msg["content"].get("data", {}).get("text/markdown", last)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = run_sync(kc.get_shell_msg)(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = run_sync(kc.get_shell_msg)(timeout=60)
    assert reply["content"]["status"] == "ok"
    assert "cancelled" in shown and "Traceback" not in shown
    assert "cancelled" in last and last.count("word ") < 400  # the answer stopped where it was
