"""Browser-test fixtures: a ScriptedServer with a UI script, a real JupyterLab using it, and Debian's chromium."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kimi_nb.testing import ScriptedServer
from kimi_nb.testing.processes import stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
LAB_START_DEADLINE_S = 90
MODEL = "kimi-k2.5-ui-test"

#: The failing cell of the test notebook (index 3) and what the test notebook holds.
CELLS = [
    ("cell-a", "a = 1\nprint(a)"),
    ("cell-b", "b = 2"),
    ("cell-c", "c = 3"),
    ("cell-err", "1 / 0"),
]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def respond(body: dict[str, Any]) -> dict[str, Any]:
    """The engine's side of the UI tests: one answer per prompt keyword, a short wrap-up after a tool result."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        return {"content": "I proposed the change above; review it and accept or reject it.", "chunk": 16}
    prompt = _text(next(m for m in reversed(messages) if m["role"] == "user").get("content"))
    if "UI-HELLO" in prompt:
        return {
            "reasoning": "The user greets me; answer with a code example.",
            "content": "Hello from **Kimi**. Here is code:\n\n```python\nprint('hi')\n```\n\nDone.",
            "chunk": 6,
        }
    if "UI-INSERT" in prompt:
        return {"tool_calls": [{"name": "insert_cell", "arguments": {"source": "x = 42", "after_cell_id": "#0"}}]}
    if "UI-DELETE" in prompt:
        return {"tool_calls": [{"name": "delete_cell", "arguments": {"cell_id": "#2"}}]}
    if "UI-EDIT" in prompt:
        return {"tool_calls": [{"name": "edit_cell",
                                "arguments": {"cell_id": "#1", "old_text": "b = 2", "new_text": "b = 20"}}]}
    if "UI-MULTI" in prompt:
        return {"tool_calls": [
            {"name": "replace_cell", "arguments": {"cell_id": "#2", "source": "c = 300"}},
            {"name": "edit_cell", "arguments": {"cell_id": "#1", "old_text": "b = 2", "new_text": "b = 5"}},
            {"name": "insert_cell", "arguments": {"source": "# notes", "cell_type": "markdown", "after_cell_id": "top"}},
        ]}
    if "UI-REMEMBER" in prompt:
        return {"tool_calls": [{"name": "memory_create",
                                "arguments": {"key": "plot-style", "content": "The user likes dark plots."}}]}
    if "UI-SLOW" in prompt:
        return {"reasoning": "A long answer.", "content": "word " * 400, "chunk": 4, "fault": {"delay": 0.05}}
    if "Fix this error" in prompt:
        return {"reasoning": "Division by zero; divide by one instead.",
                "tool_calls": [{"name": "replace_cell", "arguments": {"cell_id": "#3", "source": "1 / 1"}}]}
    return {"content": "I did not understand the test prompt."}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path: Path) -> None:
    """A small notebook whose last cell raises when run."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source, id=cell_id) for cell_id, source in CELLS]
    nbformat.write(nb, path)


@pytest.fixture(scope="session")
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=respond, models=(MODEL,)) as server:
        yield server


def _write_settings(root: Path, settings: dict[str, dict[str, Any]]) -> None:
    """User settings, e.g. {"@jupyterlab/apputils-extension:themes": {...}}."""
    for plugin, values in settings.items():
        package, name = plugin.rsplit(":", 1)
        path = root / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def run_lab(root: Path, kimi: dict[str, Any], settings: dict[str, dict[str, Any]] | None = None) -> Iterator[dict]:
    """A real JupyterLab with kimi-nb (token auth and XSRF on) and ``c.KimiNB`` = ``kimi``, until the block ends."""
    notebooks = root / "notebooks"
    notebooks.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    # No news prompt over the sidebar.
    _write_settings(root / "settings", {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
                                        **(settings or {})})
    config = root / "jupyter_server_config.json"
    config.write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"kimi_nb": True}},
        "LabApp": {"workspaces_dir": str(root / "workspaces"), "user_settings_dir": str(root / "settings"),
                   "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
        "KimiNB": {"memory_dir": str(root / "memory"), **kimi},
    }))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--port-retries=0",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={notebooks}", f"--config={config}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1"}
    for name in ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED"):
        env.pop(name, None)
    log_path = root / "lab.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + LAB_START_DEADLINE_S
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited: {log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"JupyterLab not ready: {log_path.read_text()[-3000:]}") from None
                    time.sleep(0.3)
            yield {"url": url, "token": token, "notebooks": notebooks, "log": log_path}
        finally:
            stop_process(process)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedServer) -> Iterator[dict[str, Any]]:
    """JupyterLab answering from the session's ScriptedServer."""
    kimi = {"base_url": scripted.base_url, "api_key": "ui-test-key", "model": MODEL}
    with run_lab(tmp_path_factory.mktemp("lab"), kimi) as lab:
        yield lab


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def notebook_page(request: pytest.FixtureRequest, lab: dict[str, Any], browser: Any) -> Iterator[Any]:
    """A page with a fresh copy of the test notebook open in JupyterLab; the notebook's name is the test's."""
    name = f"{request.node.name}.ipynb"
    write_notebook(lab["notebooks"] / name)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A workspace of its own, so no other test's open notebooks or chat state are restored into this page.
    page.goto(f"{lab['url']}lab/workspaces/{request.node.name}/tree/{name}?token={lab['token']}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").nth(len(CELLS) - 1).wait_for()
    page.notebook_name = name  # type: ignore[attr-defined]
    yield page
    shot(page, f"{request.node.name}-end")
    context.close()
    assert not [e for e in errors if "kimi" in e.lower()], errors


def shot(page: Any, name: str) -> None:
    """Save a screenshot under tests/ui/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="session", autouse=True)
def _clean_artifacts() -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
