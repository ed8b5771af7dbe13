"""Security: the API key never shows in messages, logs, responses or notebooks, even when the endpoint echoes
it; repair outputs cannot escape their folder; memory keys are not paths.

Authentication and XSRF on every sidebar route, and the key in /status and server logs, are covered by
tests/test_server.py; the redaction corpus by tests/test_redact.py.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient

from bench.bench_first_token import jupyter_server
from kimi_nb.agent import run_agent
from kimi_nb.engine import RemoteEngine
from kimi_nb.errors import KimiError
from kimi_nb.notebook import SnapshotNotebook
from kimi_nb.testing import ScriptedServer
from kimi_nb.tools import Toolbox

FAKE_KEY = "sk-kimi-security-7c0ffee1d2e3f4a5b6-NEVER-SHOW"
MODEL_ENV = ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK: dict[str, Any] = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"id": "c1", "cell_type": "code", "metadata": {}, "execution_count": None, "source": "x = 1", "outputs": []}]}
#: Endpoints that echo the key they refused: whole, at the end of a long message, and after "Bearer".
ECHOES = {
    "whole": f"Incorrect API key provided: {FAKE_KEY}",
    "straddling the 200th character": "The upstream gateway refused the credentials of this request; check the "
    "client and proxy configuration, the deployment name and region, then retry the request with a "
    f"key that is valid: {FAKE_KEY}",
    "bearer header": f"invalid header Authorization: Bearer {FAKE_KEY}",
}


def leaks(*texts: str) -> list[str]:
    """The texts showing the key, or any 12-character piece of it."""
    pieces = {FAKE_KEY[i:i + 12] for i in range(len(FAKE_KEY) - 11)}
    return [text for text in texts if any(piece in text for piece in pieces)]


def echo_script(message: str) -> dict[str, Any]:
    """Every request gets HTTP 401 with ``message`` (the key must still have been sent, or it is 401 anyway)."""
    return {"repeat": True, "turns": [{"fault": {"http": 401, "message": message}}]}


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MODEL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KIMI_API_KEY", FAKE_KEY)


# ----------------------------------------------------------------------------------- the key, front door by front door


@pytest.mark.parametrize("echo", list(ECHOES))
def test_agent_core_never_repeats_an_echoed_key(echo: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kimi_nb")

    async def ask() -> str:
        engine = RemoteEngine(server.base_url, api_key=FAKE_KEY, model="kimi-k2.5", max_retries=1, backoff=0.01)
        try:
            async for _ in run_agent(engine, [{"role": "user", "content": "hi"}],
                                     Toolbox(SnapshotNotebook.from_json(NOTEBOOK, "k.ipynb"))):
                pass
        except KimiError as exc:
            return f"{exc} {exc!r} {engine!r} {engine.describe()}"
        finally:
            await engine.aclose()
        raise AssertionError("the refused key did not fail the request")

    with ScriptedServer(echo_script(ECHOES[echo])) as server:
        shown = anyio.run(ask)
    assert "401" in shown
    assert not leaks(shown, caplog.text)


@pytest.fixture(scope="module")
def shell() -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext kimi_nb")
    ip.config.KimiNB.max_retries = 0
    yield ip
    ip.run_cell("%unload_ext kimi_nb")


@pytest.mark.parametrize("echo", list(ECHOES))
def test_magics_never_print_or_log_the_key(shell: InteractiveShell, key_env: None, echo: str,
                                           capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kimi_nb")
    with ScriptedServer(echo_script(ECHOES[echo])) as server:
        shell.run_cell(f"%kimi engine use {server.base_url}")
        for source in ("%kimi config", "%kimi engine status", "%%kimi\nWhat is x?", "%kimi what is x"):
            result = shell.run_cell(source, store_history=True)
            assert result.error_in_exec is None, source
    shown = capsys.readouterr()
    assert "401" in shown.out and "Traceback" not in shown.out + shown.err
    assert server.requests, "the magics never reached the endpoint"
    assert not leaks(shown.out, shown.err, caplog.text)


def test_sidebar_never_sends_the_key_to_the_browser_or_its_log(tmp_path: Path) -> None:
    with ScriptedServer(echo_script(ECHOES["whole"])) as scripted:
        with jupyter_server(scripted.base_url, tmp_path, api_key=FAKE_KEY, config="c.KimiNB.max_retries = 0") \
                as (url, token):
            headers = {"Authorization": f"token {token}"}
            status = httpx.get(f"{url}/kimi-nb/api/status", headers=headers, timeout=30)
            chat = httpx.post(f"{url}/kimi-nb/api/chat", headers=headers, timeout=60,
                              json={"prompt": "hi", "notebook": NOTEBOOK, "path": "k.ipynb"})
        sent = list(scripted.requests)
    assert chat.status_code == 502 and "401" in chat.json()["message"]
    assert sent, "the server never reached the endpoint"
    log = (tmp_path / "server.log").read_text()
    assert not leaks(status.text, chat.text, json.dumps(dict(chat.headers)), log)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the sample broken notebooks, one level down, so a path can climb out with ``..``."""
    folder = tmp_path / "work" / "broken"
    shutil.copytree(NOTEBOOKS / "broken", folder)
    return folder


def test_repair_outputs_stay_in_the_output_dir_and_never_hold_the_key(tmp_path: Path, broken: Path,
                                                                      key_env: None) -> None:
    script = json.loads((NOTEBOOKS / "scripts" / "repair_broken.json").read_text())
    script["api_key"] = FAKE_KEY  # the endpoint only answers when the key was sent
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    climbing = broken / ".." / "broken" / "typo.ipynb"
    with ScriptedServer(script) as server:
        done = subprocess.run(
            [sys.executable, "-m", "kimi_nb.cli", "repair", str(climbing), str(broken / ".."), "--output-dir",
             str(out), "--base-url", server.base_url, "--report", str(out / "report.json")],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written), sorted(written)
    assert not leaks(done.stdout, done.stderr, *(p.read_text() for p in written))


def test_executed_notebook_never_holds_the_key(tmp_path: Path, key_env: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext kimi_nb"),
        nbformat.v4.new_code_cell("%kimi config"),
        nbformat.v4.new_code_cell("%kimi engine status"),
        nbformat.v4.new_code_cell("x = 41 + 1"),
        nbformat.v4.new_code_cell("%%kimi\nWhat is x?"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    with ScriptedServer(echo_script(ECHOES["bearer header"])) as server:
        monkeypatch.setenv("KIMI_BASE_URL", server.base_url)  # the kernel inherits the environment
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = nbformat.writes(nb)
    assert "401" in text and server.requests
    assert not leaks(text)


# ----------------------------------------------------------------------------------------------- memory keys


def test_memory_keys_are_not_paths(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with ScriptedServer({"turns": []}) as scripted, jupyter_server(scripted.base_url, tmp_path) as (url, token):
        headers = {"Authorization": f"token {token}"}
        for key in ("..%2Fprecious.txt", "..%2F..%2Fprecious.txt", "%2E%2E", "precious.txt"):
            gone = httpx.delete(f"{url}/kimi-nb/api/memory/{key}", headers=headers, timeout=30)
            assert gone.status_code in (400, 404), (key, gone.status_code)
            assert "\n" not in gone.json()["message"]
    assert (tmp_path / "precious.txt").read_text() == "keep me"
