"""What the magics do for one IPython session: settings, engine, memory, and running one request end to end."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from kimi_nb.errors import KimiError
from kimi_nb.kernel_notebook import KernelNotebook, cell_id, execution_count_of
from kimi_nb.magics_comm import LabBridge

__all__ = ["FORMATS", "Ask", "KimiSession", "last_code_block"]

FORMATS = ("markdown", "code", "explain")
_FORMAT_INSTRUCTIONS = {
    "markdown": "",
    "code": "Answer with exactly one fenced ```python code block holding the complete cell; no prose outside it.",
    "explain": "Explain in prose; do not propose changes to cells.",
}
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Ask:
    """One request from ``%%kimi`` / ``%kimi``: the prompt and its options."""

    prompt: str
    cells: str | None = None
    context: bool = True
    image: bool = False
    model: str | None = None
    max_tokens: int | None = None
    thinking: bool | None = None
    format: str = "markdown"
    error_cell: int | None = None  # ask about the error of this execution (%kimi fix / explain)
    variables: tuple[str, ...] = ()  # short summaries of the variables that matter


async def _answer(engine: Any, *args: Any, **options: Any) -> AsyncIterator[Any]:
    """The agent's events for one request; the engine is closed afterwards (also when cancelled)."""
    from kimi_nb.agent import run_agent

    try:
        async for event in run_agent(engine, *args, **options):
            yield event
    finally:
        await engine.aclose()


def last_code_block(text: str) -> str | None:
    """The last fenced code block of an answer (a python one when there are several languages)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in blocks if lang in ("", "python", "py", "ipython", "python3")]
    chosen = python or [body for _, body in blocks]
    return chosen[-1].rstrip("\n") if chosen else None


class KimiSession:
    """The state the magics keep in one kernel: settings (with ``%kimi engine use`` overrides), the engine,
    a launched vLLM server, the memory store, the kernel notebook and the labextension bridge."""

    def __init__(self, shell: Any, notebook: KernelNotebook, bridge: LabBridge) -> None:
        self.shell = shell
        self.notebook = notebook
        self.bridge = bridge
        self.overrides: dict[str, Any] = {}
        self.launcher: Any = None
        self._settings: Any = None

    @property
    def live(self) -> bool:
        """True in a kernel (rich, updatable displays and widgets); False in terminal IPython."""
        return getattr(self.shell, "kernel", None) is not None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from kimi_nb.config import load_settings

            self._settings = load_settings(config=self.shell.config, **self.overrides)
        return self._settings

    def use_endpoint(self, base_url: str, model: str | None = None, *, api_key: str | None = None) -> None:
        """Send later requests to ``base_url`` (and ``model``; ``api_key=""`` sends no key)."""
        overrides = {**self.overrides, "base_url": base_url, "scripted_script": ""}
        overrides.update({name: value for name, value in (("model", model), ("api_key", api_key)) if value is not None})
        from kimi_nb.config import load_settings

        self._settings = load_settings(config=self.shell.config, **overrides)  # validates before switching
        self.overrides = overrides

    def open_engine(self) -> Any:
        from kimi_nb.engine import open_engine

        return open_engine(self.settings)

    def memory(self) -> Any:
        from kimi_nb.memory import MemoryStore

        return MemoryStore(self.settings.memory_dir)

    # -- one request -----------------------------------------------------------------------------------------
    def ask(self, ask: Ask) -> None:
        """Send the request with its context, stream the answer into the output, then place code and show
        proposals. Raises KimiError (one line) for failures before streaming starts."""
        from kimi_nb.agent import AgentDone, ProposalMade
        from kimi_nb.engine import Usage
        from kimi_nb.magics_display import AnswerView
        from kimi_nb.sync import iterate_sync
        from kimi_nb.tools import Toolbox

        settings = self.settings
        memory = self.memory()
        messages = self._messages(ask, memory)
        toolbox = Toolbox(self.notebook, memory=memory)
        view = AnswerView(live=self.live)
        proposals = []
        done: AgentDone | None = None
        usage = Usage()
        events = iterate_sync(_answer, self.open_engine(), messages, toolbox, max_steps=settings.max_steps,
                              max_tokens=ask.max_tokens or settings.max_tokens,
                              thinking=settings.thinking if ask.thinking is None else ask.thinking, model=ask.model)
        try:
            for event in events:
                if isinstance(event, ProposalMade):
                    proposals.append(event.proposal)
                elif isinstance(event, Usage):
                    usage += event
                elif isinstance(event, AgentDone):
                    done = event
                view.add(event)
        except KeyboardInterrupt:
            events.close()
            view.finish(usage, status="cancelled")
            return
        except KimiError as exc:
            view.fail(str(exc))
            view.finish(usage)
            return
        view.finish(usage, steps=done.steps if done else 0)
        self._deliver(ask, done, proposals)

    def _messages(self, ask: Ask, memory: Any) -> list[dict[str, Any]]:
        from kimi_nb.context import ContextRequest, ErrorInfo, build
        from kimi_nb.tools import Image

        notebook = self.notebook
        failed = ask.error_cell
        previous = notebook.current - 1
        if failed is None and ask.context and notebook.error(previous) and previous in notebook.past_counts():
            failed = previous  # the cell just before this one failed: that is what the user asks about
        shown = notebook.select(ask.cells) if ask.cells else None
        if shown is not None and failed is not None and failed not in shown:
            shown.append(failed)
        error = notebook.error(failed) if failed is not None else None
        images: tuple[Any, ...] = ()
        if ask.image:
            png = notebook.last_figure()
            if png is None:
                raise KimiError("--image: there is no figure to attach; draw one (e.g. with matplotlib) first")
            images = (Image("image/png", png),)
        prompt = "\n\n".join(p for p in (ask.prompt, _FORMAT_INSTRUCTIONS[ask.format]) if p)
        request = ContextRequest(
            prompt=prompt,
            snapshot=notebook.snapshot() if ask.context or failed is not None else None,
            cell_ids=[cell_id(n) for n in shown] if shown is not None else None,
            error=ErrorInfo(cell_id(failed), error.ename, error.evalue, error.traceback) if error else None,
            images=images,
            variables=ask.variables,
        )
        settings = self.settings
        return build(request, memories=tuple(memory.list()), budget=settings.context_budget,
                     redact_secrets=settings.redact_secrets).messages

    def _deliver(self, ask: Ask, done: Any, proposals: list[Any]) -> None:
        """New cells become the next input (or go through the labextension); edits become diff widgets."""
        from kimi_nb.magics_display import show_line, show_proposal

        code = last_code_block(done.final_message.content) if done is not None else None
        edits = [p for p in proposals if p.kind != "insert"]
        if code and ask.error_cell is not None and ask.format == "markdown" and not edits:
            proposals = [*proposals, self._code_as_fix(ask.error_cell, code)]  # a fix written as a code block
        new_cells = [p.after for p in proposals if p.kind == "insert"]
        if code and ask.format == "code":
            new_cells.append(code)
        elif ask.format == "code" and done is not None:
            show_line("kimi-nb: the answer has no code block, so no cell was added; ask again or drop -f code",
                      live=self.live)
        if new_cells:
            self.place_cell("\n\n".join(new_cells))
        for proposal in proposals:
            if proposal.kind != "insert":
                show_proposal(proposal, live=self.live, on_accept=self.accept)

    def _code_as_fix(self, count: int, code: str) -> Any:
        from kimi_nb.tools import Proposal, make_diff

        before = self.notebook.source(count)
        return Proposal("replace", cell_id(count), before, code, make_diff(before, code, cell_id(count), kind="replace"))

    def place_cell(self, source: str) -> None:
        """Put ``source`` into a new, unexecuted cell below the current one."""
        here = self.notebook.frontend_cell_ids.get(self.notebook.current)
        if not self.bridge.insert_cell(source, cell_type="code", after_cell_id=here):
            self.shell.set_next_input(source, replace=False)

    def accept(self, proposal: Any) -> str:
        """Apply an accepted edit: in place through the labextension, else as the next input."""
        if proposal.kind == "delete":
            return f"Delete {proposal.cell_id} yourself: kimi-nb never removes cells."
        try:
            target = self.notebook.frontend_cell_ids.get(execution_count_of(proposal.cell_id))
        except KimiError:
            target = None
        if target is not None and self.bridge.replace_cell(target, proposal.after):
            return f"Applied to {proposal.cell_id}; undo in that cell if needed."
        self.shell.set_next_input(proposal.after, replace=False)
        return "Accepted: the new source appears as a new cell below the next cell you run."

    def fix_request(self, *, explain: bool, ask: Ask) -> Ask:
        """The Ask for ``%kimi fix`` / ``%kimi explain``: the last error, its cell and the variables it uses."""
        count, error = self.notebook.last_error()
        if count not in self.notebook.errors:
            self.notebook.errors[count] = error
        variables = tuple(self.notebook.variables_in(self.notebook.source(count)))
        if explain:
            task = f"Explain why cell {cell_id(count)} failed with {error.ename} and how to fix it."
        else:
            task = (f"Cell {cell_id(count)} failed with {error.ename}. Propose the corrected cell as an edit of "
                    f"{cell_id(count)} (keep everything that works; change only what the error needs).")
        return replace(ask, prompt="\n\n".join(p for p in (task, ask.prompt) if p),
                       format="explain" if explain else ask.format, error_cell=count, variables=variables)

    def close(self) -> None:
        """Stop a vLLM server this session launched."""
        if self.launcher is not None:
            self.launcher.stop()
            self.launcher = None
