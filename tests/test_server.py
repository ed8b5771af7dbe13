"""The sidebar HTTP API on a real Jupyter Server (pytest-jupyter) answering from a real ScriptedServer."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from jupyter_server.auth import Authorizer

# The fixtures only (jp_fetch, jp_serverapp, ...): registering pytest-jupyter as a plugin would put its
# test-calling hooks and autouse event loop on every other test module of the suite.
from pytest_jupyter.jupyter_server import *
from tornado.httpclient import HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from kimi_nb.memory import MemoryStore
from kimi_nb.server.app import OFFLINE_NOTICE
from kimi_nb.testing.server import ScriptedServer

FAKE_KEY = "sk-kimi-nb-test-4f1d0c7e9a2b-DO-NOT-LEAK"
ENV_VARS = ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED")

NOTEBOOK: dict[str, Any] = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    "cells": [
        {"id": "c1", "cell_type": "code", "metadata": {}, "execution_count": 1,
         "source": ["import math\n", "print(math.pi)"],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["3.141592653589793\n"]}]},
        {"id": "c2", "cell_type": "markdown", "metadata": {}, "source": "# Notes"},
    ],
}


def on_server_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on pytest-jupyter's event loop (the test must take ``jp_asyncio_loop``)."""

    @functools.wraps(test)
    def run(**fixtures: Any) -> None:
        fixtures["jp_asyncio_loop"].run_until_complete(test(**fixtures))

    return run


class Dialogues:
    """A ScriptedServer responder: the turns of each conversation, chosen by a marker in the last user message.

    Turn N answers the N-th model call after that message (tool rounds add assistant messages), so
    concurrent conversations never take each other's turns.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        text = json.dumps(messages[last_user]["content"])
        for marker, turns in self.scripts.items():
            if marker in text:
                step = sum(m["role"] == "assistant" for m in messages[last_user:])
                return turns[min(step, len(turns) - 1)]
        return {"content": "no script for this prompt"}


@pytest.fixture
def api_key() -> str:
    """KIMI_API_KEY for the server (tests override it with parametrize)."""
    return FAKE_KEY


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, api_key: str) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    if api_key:
        monkeypatch.setenv("KIMI_API_KEY", api_key)


@pytest.fixture
def dialogues() -> Dialogues:
    return Dialogues()


@pytest.fixture
def scripted(dialogues: Dialogues):
    with ScriptedServer(responder=dialogues) as server:
        yield server


@pytest.fixture
def kimi_overrides() -> dict[str, Any]:
    """KimiNB settings a test changes (with parametrize)."""
    return {}


@pytest.fixture
def memory_dir(tmp_path) -> str:
    return str(tmp_path / "memory")


@pytest.fixture
def jp_server_config(scripted: ScriptedServer, kimi_overrides: dict[str, Any], memory_dir: str) -> dict[str, Any]:
    """The extension enabled, auth required, and the ScriptedServer as the endpoint (unless overridden)."""
    return {
        "ServerApp": {"jpserver_extensions": {"kimi_nb": True, "jupyter_server_terminals": False},
                      "allow_unauthenticated_access": False},
        "KimiNB": {"base_url": scripted.base_url, "memory_dir": memory_dir, "max_retries": 0, "timeout": 30.0,
                   **kimi_overrides},
    }


def ndjson(response: HTTPResponse) -> list[dict[str, Any]]:
    text = response.body.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def chat(jp_fetch: Any, **body: Any) -> list[dict[str, Any]]:
    response = await jp_fetch("kimi-nb", "api", "chat", method="POST", body=json.dumps(body))
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return ndjson(response)


def texts(events: list[dict[str, Any]], kind: str = "text") -> str:
    return "".join(e["text"] for e in events if e["type"] == kind)


def error_message(response: HTTPResponse) -> str:
    message = json.loads(response.body)["message"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def poll(condition: Callable[[], bool], *, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------- auth


ROUTES = [
    ("GET", ("status",), None),
    ("POST", ("chat",), json.dumps({"prompt": "hi"})),
    ("GET", ("memory",), None),
    ("DELETE", ("memory",), None),
    ("DELETE", ("memory", "units"), None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@on_server_loop
async def test_every_route_requires_authentication(jp_asyncio_loop, jp_fetch, scripted, method, path, body):
    response = await jp_fetch("kimi-nb", "api", *path, method=method, body=body, headers={"Authorization": ""},
                              raise_error=False)
    assert response.code in (401, 403)
    assert scripted.requests == []


class DenyKimi(Authorizer):
    """An authorizer (as JupyterHub deployments configure) that allows everything but the kimi-nb sidebar."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "kimi_nb"


@on_server_loop
async def test_an_authorizer_can_deny_the_sidebar(jp_asyncio_loop, jp_fetch, jp_serverapp, scripted):
    jp_serverapp.authorizer = DenyKimi(parent=jp_serverapp, identity_provider=jp_serverapp.identity_provider)
    jp_serverapp.web_app.settings["authorizer"] = jp_serverapp.authorizer
    for method, path, body in ROUTES:
        response = await jp_fetch("kimi-nb", "api", *path, method=method, body=body, raise_error=False)
        assert response.code == 403, (method, path)
    assert (await jp_fetch("api", "contents")).code == 200
    assert scripted.requests == []


@on_server_loop
async def test_cookie_authenticated_chat_needs_the_xsrf_token(jp_asyncio_loop, jp_fetch, dialogues):
    dialogues.scripts["xsrf probe"] = [{"content": "Authorized."}]
    login = await jp_fetch("kimi-nb", "api", "status")
    cookies = [c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie") if c.startswith("username-")]
    assert cookies, "token login did not set the login cookie"
    body = json.dumps({"prompt": "xsrf probe"})
    forged = await jp_fetch("kimi-nb", "api", "chat", method="POST", body=body, raise_error=False,
                            headers={"Authorization": "", "Cookie": cookies[0]})
    assert forged.code == 403
    allowed = await jp_fetch("kimi-nb", "api", "chat", method="POST", body=body, raise_error=False,
                             headers={"Authorization": "", "Cookie": f"{cookies[0]}; _xsrf=0123abcd",
                                      "X-XSRFToken": "0123abcd"})
    assert allowed.code == 200
    assert texts(ndjson(allowed)) == "Authorized."


# --------------------------------------------------------------------------------------------- status


def test_status_names_the_engine_and_never_the_key(capfd, caplog, jp_asyncio_loop, jp_server_config, request,
                                                  dialogues, scripted, jp_logging_stream):
    jp_fetch = request.getfixturevalue("jp_fetch")  # start the server now, while capfd sees its log
    dialogues.scripts["leak probe"] = [{"content": "Nothing secret here."}]

    async def use() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status = json.loads((await jp_fetch("kimi-nb", "api", "status")).body)
        return status, await chat(jp_fetch, prompt="leak probe", notebook=NOTEBOOK)

    status, events = jp_asyncio_loop.run_until_complete(use())
    assert status["ok"] is True and status["message"] is None
    assert status["offline"] is False
    assert status["model"] == "kimi-k2.5"
    assert urlsplit(scripted.base_url).netloc in status["engine"]
    assert texts(events) == "Nothing secret here."
    captured = capfd.readouterr()
    assert f"kimi-nb: model kimi-k2.5 at {scripted.base_url}" in captured.err
    seen = [json.dumps(status), json.dumps(events), caplog.text, jp_logging_stream.getvalue(), captured.out,
            captured.err, json.dumps(scripted.requests)]
    assert not [text for text in seen if FAKE_KEY in text]


@pytest.mark.parametrize("kimi_overrides", [{"base_url": f"http://127.0.0.1:{closed_port()}/v1"}])
@on_server_loop
async def test_status_says_when_the_endpoint_is_unreachable(jp_asyncio_loop, jp_fetch):
    status = json.loads((await jp_fetch("kimi-nb", "api", "status")).body)
    assert status["ok"] is False
    assert status["message"] and "\n" not in status["message"]
    assert FAKE_KEY not in json.dumps(status)


@pytest.mark.parametrize("kimi_overrides", [{"base_url": "ftp://gpu-host/v1"}])
@on_server_loop
async def test_invalid_settings_are_reported_not_fatal(jp_asyncio_loop, jp_fetch):
    status = json.loads((await jp_fetch("kimi-nb", "api", "status")).body)
    assert status["ok"] is False and "base_url must start with http" in status["message"]
    response = await jp_fetch("kimi-nb", "api", "chat", method="POST", raise_error=False,
                              body=json.dumps({"prompt": "hello?"}))
    assert response.code == 502 and "base_url" in error_message(response)
    assert (await jp_fetch("api", "contents")).code == 200


@pytest.mark.parametrize(("kimi_overrides", "api_key"), [({"base_url": ""}, "")])
def test_offline_engine_is_announced_once(capfd, jp_asyncio_loop, jp_server_config, request):
    jp_fetch = request.getfixturevalue("jp_fetch")  # start the server now, while capfd sees its log

    async def use() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status = json.loads((await jp_fetch("kimi-nb", "api", "status")).body)
        return status, await chat(jp_fetch, prompt="What is this?", notebook=NOTEBOOK)

    status, events = jp_asyncio_loop.run_until_complete(use())
    assert status["offline"] is True and status["ok"] is True
    assert "offline" in status["engine"]
    assert capfd.readouterr().err.count(OFFLINE_NOTICE) == 1
    assert events[-1]["type"] == "done"
    assert "offline" in events[-1]["content"]


# ----------------------------------------------------------------------------------------------- chat


@on_server_loop
async def test_chat_streams_reasoning_then_answer_as_ndjson(jp_asyncio_loop, jp_fetch, dialogues):
    answer = "Hello from Kimi, streamed in many small pieces."
    dialogues.scripts["Say hello"] = [{"reasoning": "The user greets me.", "content": answer, "chunk": 4}]
    events = await chat(jp_fetch, prompt="Say hello", notebook=NOTEBOOK, path="work/analysis.ipynb",
                        active_cell_id="c1", cell_ids=["c1"], images=[], error=None, history=None, thinking=True)
    kinds = [e["type"] for e in events]
    assert kinds.count("text") > 1
    assert kinds[-1] == "done" and "error" not in kinds
    assert max(i for i, k in enumerate(kinds) if k == "reasoning") < kinds.index("text")
    assert texts(events) == answer
    assert texts(events, "reasoning") == "The user greets me."
    done = events[-1]
    assert done["content"] == answer and done["stopped"] == "answer"
    assert done["messages"][-1]["role"] == "assistant"
    assert any(e["type"] == "usage" for e in events)


@on_server_loop
async def test_chat_continues_from_history(jp_asyncio_loop, jp_fetch, dialogues, scripted):
    dialogues.scripts["first question"] = [{"content": "First answer."}]
    dialogues.scripts["second question"] = [{"content": "Second answer."}]
    first = await chat(jp_fetch, prompt="first question", notebook=NOTEBOOK)
    second = await chat(jp_fetch, prompt="second question", notebook=NOTEBOOK, history=first[-1]["messages"])
    assert texts(second) == "Second answer."
    sent = json.dumps(scripted.requests[-1]["messages"])
    assert "first question" in sent and "First answer." in sent


@on_server_loop
async def test_tool_call_yields_a_proposal_against_the_notebook_sent(jp_asyncio_loop, jp_fetch, dialogues):
    edit = {"cell_id": "c1", "old_text": "print(math.pi)", "new_text": "print(round(math.pi, 2))"}
    dialogues.scripts["Round pi"] = [
        {"reasoning": "Use round.", "tool_calls": [{"name": "edit_cell", "arguments": edit}]},
        {"content": "I proposed rounding pi to two decimals."},
    ]
    events = await chat(jp_fetch, prompt="Round pi", notebook=NOTEBOOK, active_cell_id="c1")
    kinds = [e["type"] for e in events]
    assert kinds.index("tool_call_started") < kinds.index("tool_call") < kinds.index("tool_result")
    assert kinds.index("tool_result") < kinds.index("proposal") < kinds.index("text") < kinds.index("done")
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["name"] == "edit_cell" and call["arguments"] == edit
    proposal = next(e for e in events if e["type"] == "proposal")
    assert proposal["call_id"] == call["id"]
    assert proposal["kind"] == "edit" and proposal["cell_id"] == "c1" and proposal["cell_type"] == "code"
    assert proposal["before"] == "import math\nprint(math.pi)"
    assert proposal["after"] == "import math\nprint(round(math.pi, 2))"
    diff = proposal["diff"].splitlines()
    assert "-print(math.pi)" in diff and "+print(round(math.pi, 2))" in diff and " import math" in diff
    assert texts(events) == "I proposed rounding pi to two decimals."


@pytest.mark.parametrize("kimi_overrides", [{"context_budget": 400}])
@on_server_loop
async def test_context_left_out_for_the_budget_is_told_first(jp_asyncio_loop, jp_fetch, dialogues):
    dialogues.scripts["Summarise"] = [{"reasoning": "Short.", "content": "A long notebook."}]
    cells = [{"id": f"k{n}", "cell_type": "code", "metadata": {}, "outputs": [], "execution_count": n,
              "source": f"value_{n} = {n}\n" + "# filler line\n" * 40} for n in range(30)]
    events = await chat(jp_fetch, prompt="Summarise", notebook={**NOTEBOOK, "cells": cells})
    notices = [e["text"] for e in events if e["type"] == "notice"]
    assert notices and all(text.startswith("Context: ") for text in notices)
    assert [e["type"] for e in events[:len(notices)]] == ["notice"] * len(notices)
    assert texts(events) == "A long notebook."


BAD_BODIES = [
    (b"{not json", "JSON"),
    (b'["prompt"]', "object"),
    (b"{}", "prompt"),
    (json.dumps({"prompt": 42}).encode(), "prompt"),
    (json.dumps({"prompt": "   "}).encode(), "prompt"),
    (json.dumps({"prompt": "hi", "notebook": "cells"}).encode(), "notebook"),
    (json.dumps({"prompt": "hi", "notebook": {"cells": "none"}}).encode(), "notebook"),
    (json.dumps({"prompt": "hi", "notebook": {"cells": [3]}}).encode(), "notebook"),
    (json.dumps({"prompt": "hi", "path": ["a"]}).encode(), "path"),
    (json.dumps({"prompt": "hi", "active_cell_id": 1}).encode(), "active_cell_id"),
    (json.dumps({"prompt": "hi", "cell_ids": ["c1", 2]}).encode(), "cell_ids"),
    (json.dumps({"prompt": "hi", "images": [{"mime": "text/html", "data": "PGI+"}]}).encode(), "images[0]"),
    (json.dumps({"prompt": "hi", "images": [{"mime": "image/png", "data": "not base64!"}]}).encode(), "images[0]"),
    (json.dumps({"prompt": "hi", "error": {"cell_id": "c1", "ename": "KeyError"}}).encode(), "error.evalue"),
    (json.dumps({"prompt": "hi", "history": [{"content": "no role"}]}).encode(), "history"),
    (json.dumps({"prompt": "hi", "thinking": "yes"}).encode(), "thinking"),
    (json.dumps({"prompt": "hi", "temperature": 2}).encode(), "temperature"),
]


@pytest.mark.parametrize(("body", "names"), BAD_BODIES)
@on_server_loop
async def test_bad_chat_input_is_a_400_with_one_line(jp_asyncio_loop, jp_fetch, scripted, body, names):
    response = await jp_fetch("kimi-nb", "api", "chat", method="POST", body=body, raise_error=False)
    assert response.code == 400
    assert names in error_message(response)
    assert scripted.requests == []


@pytest.mark.parametrize("kimi_overrides", [{"base_url": f"http://127.0.0.1:{closed_port()}/v1"}])
@on_server_loop
async def test_unreachable_engine_is_a_502_with_one_line(jp_asyncio_loop, jp_fetch):
    response = await jp_fetch("kimi-nb", "api", "chat", method="POST", raise_error=False,
                              body=json.dumps({"prompt": "anyone there?", "notebook": NOTEBOOK}))
    assert response.code == 502
    assert FAKE_KEY not in error_message(response)


@on_server_loop
async def test_failure_mid_stream_ends_with_an_error_line(jp_asyncio_loop, jp_fetch, dialogues):
    reasoning, answer = "First I think about it at some length.", "This answer will be cut off in the middle."
    dialogues.scripts["Break off"] = [{"reasoning": reasoning, "content": answer, "chunk": 4,
                                       "fault": {"drop_after": len(reasoning) + 12}}]
    events = await chat(jp_fetch, prompt="Break off", notebook=NOTEBOOK)
    assert texts(events, "reasoning") == reasoning
    assert answer.startswith(texts(events))
    assert events[-1]["type"] == "error"
    assert events[-1]["message"] and "\n" not in events[-1]["message"]
    assert "done" not in [e["type"] for e in events]


@on_server_loop
async def test_closing_the_connection_cancels_the_agent(jp_asyncio_loop, jp_fetch, jp_serverapp, jp_base_url,
                                                      jp_auth_header, dialogues, caplog):
    dialogues.scripts["Write slowly"] = [{"reasoning": "Take it slowly.", "content": " ".join(["slow"] * 200),
                                          "chunk": 5, "fault": {"delay": 0.05}}]
    dialogues.scripts["Still there?"] = [{"content": "Yes."}]
    body = json.dumps({"prompt": "Write slowly", "notebook": NOTEBOOK}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_serverapp.port)
    writer.write(
        f"POST {jp_base_url}kimi-nb/api/chat HTTP/1.1\r\nHost: 127.0.0.1:{jp_serverapp.port}\r\n"
        f"Authorization: {jp_auth_header['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    received = b""
    while b'"type": "text"' not in received:
        chunk = await asyncio.wait_for(reader.read(4096), 20)
        assert chunk, "the server closed the stream before the first text event"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    writer.close()
    await poll(lambda: "kimi-nb chat cancelled" in caplog.text)
    assert texts(await chat(jp_fetch, prompt="Still there?")) == "Yes."


@on_server_loop
async def test_twenty_concurrent_streams_each_get_their_own_answer(jp_asyncio_loop, jp_fetch, jp_serverapp,
                                                                  jp_base_url, jp_auth_header, dialogues):
    answers = {f"client {n:02d} asks": f"Answer for client {n:02d}:" + " word" * (n + 5) for n in range(20)}
    for prompt, answer in answers.items():
        dialogues.scripts[prompt] = [{"reasoning": f"Counting for {prompt}.", "content": answer, "chunk": 3,
                                      "fault": {"delay": 0.002}}]
    client = SimpleAsyncHTTPClient(force_instance=True, max_clients=len(answers))
    url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}kimi-nb/api/chat"
    try:
        responses = await asyncio.gather(*(
            client.fetch(url, method="POST", headers=jp_auth_header, request_timeout=120,
                         body=json.dumps({"prompt": prompt, "notebook": NOTEBOOK}))
            for prompt in answers
        ))
    finally:
        client.close()
    for (prompt, answer), response in zip(answers.items(), responses):
        events = ndjson(response)
        assert texts(events) == answer, prompt
        assert events[-1]["type"] == "done" and events[-1]["content"] == answer


@on_server_loop
async def test_path_is_only_a_label(jp_asyncio_loop, jp_fetch, dialogues, scripted):
    dialogues.scripts["What is in here?"] = [
        {"tool_calls": [{"name": "list_cells", "arguments": {}}]},
        {"content": "An empty notebook."},
    ]
    events = await chat(jp_fetch, prompt="What is in here?", notebook=None, path="../../etc/passwd")
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["content"] == "The notebook has no cells."
    assert texts(events) == "An empty notebook."
    everything = json.dumps(events) + json.dumps(scripted.requests)
    assert "root:" not in everything


# --------------------------------------------------------------------------------------------- memory


@on_server_loop
async def test_memory_list_delete_and_clear(jp_asyncio_loop, jp_fetch, memory_dir):
    store = MemoryStore(memory_dir)
    store.create("units", "Use SI units.")
    store.create("plot-style", "Seaborn, colour-blind palette.")

    async def listed() -> list[dict[str, Any]]:
        return json.loads((await jp_fetch("kimi-nb", "api", "memory")).body)["memories"]

    memories = await listed()
    assert [(m["key"], m["content"]) for m in memories] == [("plot-style", "Seaborn, colour-blind palette."),
                                                           ("units", "Use SI units.")]
    assert all(m["updated_at"] for m in memories)
    assert (await jp_fetch("kimi-nb", "api", "memory", "units", method="DELETE")).code == 204
    assert [m["key"] for m in await listed()] == ["plot-style"]
    missing = await jp_fetch("kimi-nb", "api", "memory", "units", method="DELETE", raise_error=False)
    assert missing.code == 404 and "units" in error_message(missing)
    assert (await jp_fetch("kimi-nb", "api", "memory", method="DELETE")).code == 204
    assert await listed() == []
    assert store.list() == []


# -------------------------------------------------------------------------------------------- loading


def test_loading_the_extension_imports_no_model_client():
    code = (
        "import sys, kimi_nb\n"
        "points = kimi_nb._jupyter_server_extension_points()\n"
        "assert points[0]['app'].name == 'kimi_nb'\n"
        "heavy = ('openai', 'httpx', 'nbclient', 'kimi_nb.agent', 'kimi_nb.engine', 'kimi_nb.tools',"
        " 'kimi_nb.context', 'kimi_nb.testing')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
