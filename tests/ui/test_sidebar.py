"""End-to-end: the Kimi sidebar in a real JupyterLab driven by Debian's chromium, answering from a ScriptedServer."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import pytest

from tests.ui.conftest import CELLS, MODEL, run_lab, shot

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000


def open_sidebar(page: Any) -> Any:
    page.locator('.jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id="kimi-nb-sidebar"]').click()
    sidebar = page.locator("#kimi-nb-sidebar")
    sidebar.locator(".kimi-chat-input").wait_for()
    return sidebar


def send(sidebar: Any, prompt: str) -> None:
    sidebar.locator(".kimi-chat-input").fill(prompt)
    sidebar.locator(".kimi-send").click()


def last_answer(sidebar: Any) -> Any:
    answer = sidebar.locator(".kimi-message-assistant").last
    answer.wait_for()
    return answer


def wait_answered(sidebar: Any) -> Any:
    answer = last_answer(sidebar)
    answer.and_(sidebar.locator('[data-streaming="false"]')).wait_for(timeout=TIMEOUT_MS)
    return answer


def cell_sources(page: Any) -> list[str]:
    return page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor .cm-content").all_inner_texts()


def wait_kernel_idle(page: Any) -> None:
    """Wait until the notebook's kernel has started (running a cell earlier may drop the request)."""
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=60_000)


def wait_for(predicate: Any, what: str, timeout: float = TIMEOUT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_prompt_streams_markdown_answer_that_survives_reload(notebook_page: Any) -> None:
    page = notebook_page
    sidebar = open_sidebar(page)
    status = sidebar.locator(".kimi-status")
    status.locator(f"text={MODEL}").wait_for(timeout=TIMEOUT_MS)
    assert "kimi-status-ok" in status.get_attribute("class")
    sidebar.locator('.kimi-chip[data-kind="cell"]').first.wait_for()
    shot(page, "chat-1-open")

    send(sidebar, "UI-HELLO say hello")
    answer = last_answer(sidebar)
    shot(page, "chat-2-streaming")
    answer = wait_answered(sidebar)
    answer.locator(".jp-RenderedMarkdown strong", has_text="Kimi").wait_for()
    assert answer.locator(".kimi-code pre").inner_text().strip() == "print('hi')"
    assert answer.locator(".kimi-insert-code").is_visible()
    assert answer.locator(".kimi-copy-code").is_visible()
    reasoning = answer.locator("details.kimi-reasoning")
    assert reasoning.get_attribute("open") is None  # folded by default
    assert "The user greets me" in reasoning.text_content()
    assert "$" in answer.locator(".kimi-usage").inner_text()
    shot(page, "chat-3-answered")

    answer.locator(".kimi-insert-code").click()
    wait_for(lambda: "print('hi')" in cell_sources(page), "the code block inserted as a cell")

    page.reload()
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    sidebar = open_sidebar(page)
    sidebar.locator(".kimi-message-user", has_text="UI-HELLO").wait_for(timeout=TIMEOUT_MS)
    last_answer(sidebar).locator(".jp-RenderedMarkdown strong", has_text="Kimi").wait_for()
    shot(page, "chat-4-after-reload")


def test_accept_insert_adds_cell_and_notebook_undo_removes_it(notebook_page: Any) -> None:
    page = notebook_page
    sidebar = open_sidebar(page)
    send(sidebar, "UI-INSERT add a cell")
    proposal = wait_answered(sidebar).locator('.kimi-proposal[data-kind="insert"]')
    assert proposal.locator(".kimi-proposal-preview").inner_text() == "x = 42"
    assert len(cell_sources(page)) == len(CELLS)
    shot(page, "insert-1-proposed")

    proposal.locator(".kimi-accept").click()
    wait_for(lambda: len(cell_sources(page)) == len(CELLS) + 1, "the inserted cell")
    assert cell_sources(page)[1] == "x = 42"
    assert proposal.get_attribute("data-state") == "accepted"
    shot(page, "insert-2-accepted")

    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("z")
    wait_for(lambda: len(cell_sources(page)) == len(CELLS), "the notebook's undo to remove the cell")
    assert "x = 42" not in cell_sources(page)
    shot(page, "insert-3-undone")

    send(sidebar, "UI-DELETE drop c")
    delete = wait_answered(sidebar).locator('.kimi-proposal[data-kind="delete"]')
    assert "Delete this cell?" in delete.inner_text() and "c = 3" in delete.inner_text()
    assert len(cell_sources(page)) == len(CELLS)  # nothing happens before the confirmation
    delete.locator(".kimi-accept").click()
    wait_for(lambda: "c = 3" not in cell_sources(page), "the deleted cell")
    assert cell_sources(page) == ["a = 1\nprint(a)", "b = 2", "1 / 0"]
    shot(page, "delete-1-confirmed")


def test_edit_diff_in_sidebar_and_notebook_accepted_inline(notebook_page: Any) -> None:
    page = notebook_page
    sidebar = open_sidebar(page)
    send(sidebar, "UI-EDIT change b")
    proposal = wait_answered(sidebar).locator('.kimi-proposal[data-kind="edit"]')
    diff = proposal.locator('.kimi-diff[data-loaded="true"]')
    diff.locator(".cm-mergeView").wait_for(timeout=TIMEOUT_MS)  # side by side by default
    assert "b = 2" in diff.locator(".cm-mergeViewEditor").first.inner_text()
    assert "b = 20" in diff.locator(".cm-mergeViewEditor").last.inner_text()
    inline = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".kimi-inline-proposal")
    inline.locator(".cm-mergeView").wait_for(timeout=TIMEOUT_MS)  # the same diff below the cell it changes
    shot(page, "edit-1-diff")

    inline.locator(".kimi-accept").click()
    wait_for(lambda: cell_sources(page)[1] == "b = 20", "the edited cell")
    assert cell_sources(page) == ["a = 1\nprint(a)", "b = 20", "c = 3", "1 / 0"]
    assert proposal.get_attribute("data-state") == "accepted"
    assert page.locator(".kimi-inline-proposal").count() == 0
    shot(page, "edit-2-accepted")

    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content").click()
    page.keyboard.press("Control+z")  # the cell's own undo reverts the accepted edit
    wait_for(lambda: cell_sources(page)[1] == "b = 2", "the cell's undo to revert the edit")
    shot(page, "edit-3-undone")


def set_diff_view(page: Any, lab: dict[str, Any], mode: str) -> None:
    """Change the sidebar's diffView setting through JupyterLab's settings API (read at page load)."""
    response = page.request.put(
        f"{lab['url']}lab/api/settings/kimi-nb:plugin",
        headers={"Authorization": f"token {lab['token']}"},
        data=json.dumps({"raw": json.dumps({"diffView": mode})}),
    )
    assert response.ok, response.text()


def test_reject_changes_nothing_and_accept_all_applies_the_rest(notebook_page: Any, lab: dict[str, Any]) -> None:
    page = notebook_page
    set_diff_view(page, lab, "unified")
    try:
        page.reload()
        page.locator(".jp-Notebook .jp-Cell").nth(len(CELLS) - 1).wait_for(timeout=60_000)
        check_reject_then_accept_all(page)
    finally:
        set_diff_view(page, lab, "side-by-side")


def check_reject_then_accept_all(page: Any) -> None:
    sidebar = open_sidebar(page)
    before = cell_sources(page)
    send(sidebar, "UI-MULTI tidy up")
    answer = wait_answered(sidebar)
    proposals = answer.locator(".kimi-proposal")
    wait_for(lambda: proposals.count() == 3, "three proposals")
    replace = answer.locator('.kimi-proposal[data-kind="replace"]')
    unified = replace.locator(".kimi-diff-unified")
    unified.locator(".cm-deletedChunk").wait_for(timeout=TIMEOUT_MS)  # the unified diff, as set
    assert unified.locator(".cm-mergeView").count() == 0
    assert "c = 300" in unified.locator(".cm-content").inner_text()
    assert replace.locator(".kimi-proposal-title").inner_text() == "Replace cell 3"
    shot(page, "multi-1-proposed")
    replace.locator(".kimi-show-cell").click()
    wait_for(lambda: "jp-mod-active" in page.locator(".jp-Notebook .jp-Cell").nth(2).get_attribute("class"),
             "Show to select the cell")

    replace.locator(".kimi-reject").click()
    wait_for(lambda: replace.get_attribute("data-state") == "rejected", "the rejected state")
    assert replace.locator(".kimi-accept").count() == 0
    assert cell_sources(page) == before
    shot(page, "multi-2-rejected")

    answer.locator(".kimi-accept-all").click()
    wait_for(lambda: len(cell_sources(page)) == len(CELLS) + 1, "the inserted cell")
    assert cell_sources(page) == ["# notes", "a = 1\nprint(a)", "b = 5", "c = 3", "1 / 0"]
    assert [proposals.nth(i).get_attribute("data-state") for i in range(3)] == ["rejected", "accepted", "accepted"]
    shot(page, "multi-3-accepted")


def test_fix_with_kimi_sends_the_traceback_and_shows_the_fix(notebook_page: Any, scripted: Any) -> None:
    page = notebook_page
    failing = page.locator(".jp-Notebook .jp-Cell").nth(len(CELLS) - 1)
    wait_kernel_idle(page)
    failing.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
    button = failing.locator(".kimi-fix-error")
    button.wait_for(timeout=60_000)  # the kernel starts, runs the cell and shows the traceback
    shot(page, "fix-1-error")
    seen = len(scripted.requests)

    button.click()
    sidebar = page.locator("#kimi-nb-sidebar")
    sidebar.locator(".kimi-message-user", has_text="Fix this error").wait_for(timeout=TIMEOUT_MS)
    proposal = wait_answered(sidebar).locator('.kimi-proposal[data-kind="replace"]')
    proposal.locator(".kimi-diff .cm-mergeView").wait_for(timeout=TIMEOUT_MS)
    request = json.dumps(scripted.requests[seen])
    assert "ZeroDivisionError" in request and "division by zero" in request
    shot(page, "fix-2-proposal")

    proposal.locator(".kimi-accept").click()
    wait_for(lambda: cell_sources(page)[-1] == "1 / 1", "the fixed cell")
    shot(page, "fix-3-accepted")


def test_stop_ends_a_streaming_answer(notebook_page: Any) -> None:
    page = notebook_page
    sidebar = open_sidebar(page)
    send(sidebar, "UI-SLOW talk a lot")
    answer = last_answer(sidebar)
    answer.locator(".jp-RenderedMarkdown").wait_for(timeout=TIMEOUT_MS)
    sidebar.locator(".kimi-stop").click()
    answer.locator(".kimi-stopped").wait_for(timeout=TIMEOUT_MS)
    assert answer.get_attribute("data-streaming") == "false"
    sidebar.locator(".kimi-send").wait_for()
    shot(page, "stop-1-stopped")


def test_kernel_comm_inserts_a_cell_from_the_magics(notebook_page: Any) -> None:
    page = notebook_page
    cells = page.locator(".jp-Notebook .jp-Cell")
    first = cells.nth(0)
    wait_kernel_idle(page)
    first.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.type("%load_ext kimi_nb")
    page.keyboard.press("Control+Enter")  # run in place; the lab opens the kimi_nb comm when it has run
    first.locator(".jp-InputPrompt", has_text="[1]").wait_for(timeout=60_000)
    second = cells.nth(1)
    second.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.type(
        "get_ipython().magics_manager.registry['KimiMagics'].bridge"
        ".insert_cell('from_kernel = 1', cell_type='code', after_cell_id=None)"
    )
    page.keyboard.press("Control+Enter")
    second.locator(".jp-OutputArea-output", has_text="True").wait_for(timeout=TIMEOUT_MS)
    wait_for(lambda: "from_kernel = 1" in cell_sources(page), "the cell the kernel inserted")
    assert cell_sources(page)[2] == "from_kernel = 1"  # below the active cell, not executed
    shot(page, "comm-1-inserted")


#: A 1x1 PNG.
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

PASTE_IMAGE = f"""textarea => {{
    const bytes = Uint8Array.from(atob('{PIXEL_PNG}'), c => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], 'plot.png', {{ type: 'image/png' }}));
    textarea.dispatchEvent(new ClipboardEvent('paste', {{ clipboardData: transfer, bubbles: true }}));
}}"""


def test_shortcut_opens_sidebar_with_cell_chip_and_pasted_image_is_sent(notebook_page: Any, scripted: Any) -> None:
    page = notebook_page
    page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+Shift+K")
    sidebar = page.locator("#kimi-nb-sidebar")
    sidebar.locator(".kimi-chat-input").wait_for()
    wait_for(lambda: page.evaluate("document.activeElement.classList.contains('kimi-chat-input')"),
             "the prompt box to get the focus")
    chip = sidebar.locator('.kimi-chip[data-kind="cell"]')
    assert chip.count() == 1 and chip.inner_text().startswith("cell 3")

    textarea = sidebar.locator(".kimi-chat-input")
    textarea.evaluate(PASTE_IMAGE)
    sidebar.locator('.kimi-chip[data-kind="image"]').wait_for()
    shot(page, "context-1-chips")
    chip.locator(".kimi-chip-remove").click()
    assert sidebar.locator('.kimi-chip[data-kind="cell"]').count() == 0

    seen = len(scripted.requests)
    send(sidebar, "UI-HELLO with a picture")
    wait_answered(sidebar)
    request = json.dumps(scripted.requests[seen])
    assert f"data:image/png;base64,{PIXEL_PNG}" in request
    assert sidebar.locator(".kimi-chip").count() == 0  # sent context is cleared
    shot(page, "context-2-sent")


def test_memories_are_listed_and_forgotten(notebook_page: Any) -> None:
    page = notebook_page
    sidebar = open_sidebar(page)
    send(sidebar, "UI-REMEMBER I like dark plots")
    answer = wait_answered(sidebar)
    assert answer.locator(".kimi-tool", has_text="memory_create").count() == 1
    sidebar.locator(".kimi-show-memories").click()
    memory = sidebar.locator(".kimi-memory", has_text="plot-style")
    memory.wait_for(timeout=TIMEOUT_MS)
    assert "dark plots" in memory.inner_text()
    shot(page, "memory-1-listed")
    memory.locator(".kimi-chip-remove").click()
    memory.wait_for(state="detached", timeout=TIMEOUT_MS)
    shot(page, "memory-2-forgotten")


def test_unreachable_engine_is_said_plainly_in_the_dark_theme(tmp_path: Any, browser: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    kimi = {"base_url": f"http://127.0.0.1:{dead}/v1", "api_key": "ui-test-key", "model": MODEL}
    dark = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}
    with run_lab(tmp_path, kimi, settings=dark) as lab:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(f"{lab['url']}lab?token={lab['token']}")
        sidebar = open_sidebar(page)
        problem = sidebar.locator(".kimi-problem")
        problem.wait_for(timeout=TIMEOUT_MS)
        assert str(dead) in problem.inner_text()
        assert "kimi-status-problem" in sidebar.locator(".kimi-status").get_attribute("class")
        send(sidebar, "UI-HELLO anyone there?")
        error = wait_answered(sidebar).locator(".kimi-error")
        assert error.inner_text().strip()
        background = sidebar.evaluate("node => getComputedStyle(node).backgroundColor")
        assert sum(int(v) for v in re.findall(r"\d+", background)[:3]) < 3 * 96, background  # dark, from theme vars
        shot(page, "unreachable-1-dark")
        context.close()
