"""How the magics show an answer: markdown streamed into the cell output, tool lines, usage, and diff widgets."""

from __future__ import annotations

import difflib
import html
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from kimi_nb.engine import Usage
from kimi_nb.protocol import ReasoningDelta, TextDelta
from kimi_nb.tools import Proposal

__all__ = ["AnswerView", "StatusLine", "diff_html", "diff_text", "show_line", "show_proposal"]

_REFRESH_SECONDS = 0.15
_ARGUMENTS_SHOWN = 80


class AnswerView:
    """The live output of one request. In a kernel it is one display updated in place (``display_id``) holding
    markdown: the reasoning folded in a ``<details>``, one line per tool call, the answer, notices and a small
    usage line. Elsewhere (terminal IPython) the answer text is printed as it streams."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.reasoning = ""
        self.text = ""
        self.lines: list[str] = []  # tool calls and notices, in order
        self.footer = ""
        self._handle: Any = None
        self._shown_at = 0.0

    def add(self, event: Any) -> None:
        """Take one agent event (text, reasoning, tool call, notice)."""
        from kimi_nb.agent import Notice, ToolCallRequested, ToolResultEvent

        if isinstance(event, TextDelta):
            self.text += event.text
            if not self.live:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ToolCallRequested):
            self.note(tool_line(event.call.name, event.call.arguments, event.call.error))
        elif isinstance(event, ToolResultEvent) and event.result.is_error:
            self.note(f"`  ↳ {_first_line(event.result.content)}`")
        elif isinstance(event, Notice):
            self.note(f"*{html.escape(event.text)}*")
        self._refresh()

    def note(self, line: str) -> None:
        self.lines.append(line)
        if not self.live:
            print(f"\n{_plain(line)}")

    def fail(self, message: str) -> None:
        """Show a failure as one prominent line (no traceback)."""
        self.note(f"**kimi-nb:** {html.escape(message)}")

    def finish(self, usage: Usage | None = None, *, steps: int = 0, status: str = "") -> None:
        """Final render; ``status`` (e.g. "cancelled") is shown before the usage line."""
        parts = [status] if status else []
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            cached = f" ({usage.cached_tokens} cached)" if usage.cached_tokens else ""
            parts.append(f"{usage.prompt_tokens} tokens in{cached} · {usage.completion_tokens} out"
                         + (f" · {steps} steps" if steps > 1 else ""))
        self.footer = " · ".join(parts)
        if not self.live:
            if self.footer:
                print(f"\n[{self.footer}]")
            return
        self._refresh(force=True)

    def markdown(self) -> str:
        blocks = []
        if self.reasoning.strip():
            blocks.append(f"<details><summary>Thinking ({len(self.reasoning)} chars)</summary>\n\n"
                          f"{html.escape(self.reasoning.strip())}\n\n</details>")
        blocks += self.lines
        if self.text:
            blocks.append(self.text)
        if self.footer:
            blocks.append(f"<sub>{html.escape(self.footer)}</sub>")
        return "\n\n".join(blocks) or "*Kimi is thinking…*"

    def _refresh(self, *, force: bool = False) -> None:
        if not self.live or (not force and time.monotonic() - self._shown_at < _REFRESH_SECONDS):
            return
        from IPython.display import display

        bundle = {"text/markdown": self.markdown(), "text/plain": self.text or "…"}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self._shown_at = time.monotonic()


def tool_line(name: str, arguments: dict[str, Any], error: str | None = None) -> str:
    """One short line for a tool call: ``→ read_cell {"cell_id": "In[3]"}``."""
    shown = json.dumps(arguments, ensure_ascii=False)
    if len(shown) > _ARGUMENTS_SHOWN:
        shown = shown[:_ARGUMENTS_SHOWN] + "…"
    suffix = f" — {error}" if error else ""
    return f"`→ {name} {shown}`{html.escape(suffix)}"


class StatusLine:
    """One line of status updated in place in a kernel (launch progress); printed line by line elsewhere."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self._handle: Any = None

    def show(self, message: str) -> None:
        if not self.live:
            print(message)
            return
        from IPython.display import display

        bundle = {"text/plain": message}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def show_line(message: str, *, live: bool) -> None:
    """Plain lines of output (an error with what to do next, a status, a listing), kept as written."""
    if live:
        from IPython.display import display

        display({"text/plain": message}, raw=True)
    else:
        print(message)


def diff_text(proposal: Proposal) -> str:
    """The unified diff of a proposal (the one the tool computed, or computed here)."""
    if proposal.diff:
        return proposal.diff
    lines = difflib.unified_diff(proposal.before.splitlines(keepends=True), proposal.after.splitlines(keepends=True),
                                 fromfile=proposal.cell_id, tofile=f"{proposal.cell_id} (proposed)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


_LINE_STYLES = (("+++", "font-weight:bold"), ("---", "font-weight:bold"), ("@@", "color:#0550ae"),
                ("+", "background:#dafbe1;color:#116329"), ("-", "background:#ffebe9;color:#82071e"))


def diff_html(diff: str) -> str:
    """A unified diff as coloured HTML (added lines green, removed red, hunk headers blue)."""
    rows = []
    for line in diff.splitlines():
        style = next((css for prefix, css in _LINE_STYLES if line.startswith(prefix)), "")
        rows.append(f'<span style="display:block;{style}">{html.escape(line) or "&nbsp;"}</span>')
    return ('<pre style="font-family:var(--jp-code-font-family,monospace);font-size:12px;margin:0;'
            f'padding:4px;border:1px solid #d0d7de;border-radius:4px;overflow-x:auto">{"".join(rows)}</pre>')


def show_proposal(proposal: Proposal, *, live: bool, on_accept: Callable[[Proposal], str]) -> None:
    """A diff widget for an edit / replace / delete proposal: the coloured diff with Accept and Reject.

    Accept calls ``on_accept`` (which places the new source; nothing is run) and shows the line it returns;
    Reject closes the widget. Outside a kernel the diff is printed."""
    title = f"Proposed {proposal.kind} of {proposal.cell_id}"
    diff = diff_text(proposal)
    if not live:
        print(f"{title}:\n{diff}")
        return
    import ipywidgets as widgets
    from IPython.display import display

    accept = widgets.Button(description="Accept", button_style="success", icon="check",
                            tooltip="Place the new source as a cell (it is not run)")
    reject = widgets.Button(description="Reject", icon="times", tooltip="Discard this proposal")
    status = widgets.HTML()
    box = widgets.VBox([widgets.HTML(f"<b>{html.escape(title)}</b>"), widgets.HTML(diff_html(diff)),
                        widgets.HBox([accept, reject, status])])

    def accepted(_: Any) -> None:
        accept.disabled = reject.disabled = True
        status.value = html.escape(on_accept(proposal))

    accept.on_click(accepted)
    reject.on_click(lambda _: box.close())
    display(box)


def _first_line(text: str, width: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[:width] + "…"


def _plain(line: str) -> str:
    return line.replace("`", "").replace("*", "")
