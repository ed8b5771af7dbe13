"""Repair engine for one notebook: execute it in a fresh kernel, let the agent fix the first failing cell, retry.

``repair_notebook(path, engine, options)`` never raises for a bad notebook, a missing kernel, a hanging cell
or a failing model: each becomes a ``RepairResult`` with a status (ok, repaired, failed, error) and a one-line
reason. Only cancellation propagates, after the kernel is shut down. Nothing is written here; the in-memory
notebook is in ``result.notebook`` for the front door to save.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from kimi_nb.engine import Engine, Usage
from kimi_nb.errors import EngineError, NotebookError, ToolError
from kimi_nb.notebook import FileNotebook, NotebookSnapshot
from kimi_nb.repair_kernel import CellFailure, KernelRunner
from kimi_nb.tools import Proposal

__all__ = ["STATUSES", "Attempt", "CellFailure", "RepairOptions", "RepairResult", "Slots", "repair_notebook"]

#: Result statuses: ran cleanly as is / runs after the model's edits / still fails / could not be processed.
STATUSES = ("ok", "repaired", "failed", "error")

REPAIR_PROMPT = (
    "This notebook fails when run from top to bottom in a fresh kernel: cell #{index} (id {cell_id}) raises the "
    "error above. Find the cause (it may be in an earlier cell) and fix it with the smallest change, using the "
    "notebook tools (read_cell, edit_cell, replace_cell, insert_cell). Keep the notebook's intent: do not delete "
    "the failing code or silence the error. Your edits are applied and the notebook is run again."
)


@dataclass(frozen=True)
class RepairOptions:
    """How to repair: attempts, execution and model options."""

    max_attempts: int = 3
    restart: bool = False
    timeout: float | None = 60.0
    kernel_name: str | None = None
    check_only: bool = False
    max_steps: int = 8
    max_tokens: int | None = None
    thinking: bool | None = None
    model: str | None = None
    context_budget: int = 24000
    redact_secrets: bool = True


@dataclass(frozen=True)
class Attempt:
    """One round: the failure shown to the model, what it proposed, and whether the notebook then ran.

    ``outcome``: "fixed", "still failing" (``next_failure`` says where), "no change" or "model error"."""

    number: int
    failure: CellFailure
    proposals: tuple[Proposal, ...]
    usage: Usage
    model_seconds: float
    execute_seconds: float
    outcome: str
    next_failure: CellFailure | None = None
    message: str = ""

    @property
    def diff(self) -> str:
        return "".join(p.diff if p.diff.endswith("\n") else p.diff + "\n" for p in self.proposals)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "cell_id": self.failure.cell_id,
            "cell_index": self.failure.cell_index,
            "ename": self.failure.ename,
            "evalue": self.failure.evalue,
            "outcome": self.outcome,
            "diff": self.diff,
            "proposals": [p.to_json() for p in self.proposals],
            "next_failure": self.next_failure.to_json() if self.next_failure else None,
            "message": self.message,
            "usage": _usage_json(self.usage),
            "model_seconds": round(self.model_seconds, 3),
            "execute_seconds": round(self.execute_seconds, 3),
        }


@dataclass(frozen=True)
class RepairResult:
    """What happened to one notebook. ``notebook`` is the in-memory (possibly edited) notebook and ``original``
    its snapshot as loaded, when it loaded. ``total_seconds`` leaves out time spent waiting for a job slot."""

    path: str
    status: str
    reason: str = ""
    failure: CellFailure | None = None
    attempts: tuple[Attempt, ...] = ()
    execute_seconds: float = 0.0
    total_seconds: float = 0.0
    notebook: FileNotebook | None = field(default=None, repr=False, compare=False)
    original: NotebookSnapshot | None = field(default=None, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        """True when the model's edits were applied to the in-memory notebook."""
        return any(attempt.proposals for attempt in self.attempts)

    @property
    def usage(self) -> Usage:
        return sum((attempt.usage for attempt in self.attempts), Usage())

    @property
    def model_seconds(self) -> float:
        return sum(attempt.model_seconds for attempt in self.attempts)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "failure": self.failure.to_json() if self.failure else None,
            "attempts": [attempt.to_json() for attempt in self.attempts],
            "usage": _usage_json(self.usage),
            "durations": {
                "total_seconds": round(self.total_seconds, 3),
                "execute_seconds": round(self.execute_seconds, 3),
                "model_seconds": round(self.model_seconds, 3),
            },
        }


@dataclass(frozen=True)
class Slots:
    """Bounds for repairing many notebooks at once: ``running`` notebooks at a time, plus ``ahead`` more whose
    kernels start before their turn, so a kernel start overlaps other notebooks' model time (anyio
    CapacityLimiters shared by every ``repair_notebook`` call of a run)."""

    running: anyio.CapacityLimiter
    ahead: anyio.CapacityLimiter

    @classmethod
    def for_jobs(cls, jobs: int) -> Slots:
        """``jobs`` running; kernel starts (CPU-bound) ahead of their turn at most one per CPU, up to ``jobs``."""
        return cls(anyio.CapacityLimiter(jobs), anyio.CapacityLimiter(max(1, min(jobs, os.cpu_count() or 1))))

    @asynccontextmanager
    async def turn(self, runner: KernelRunner, status: Callable[[str], None]) -> AsyncIterator[float]:
        """Start ``runner``'s kernel ahead, then hold a running slot for the body; yields the seconds spent
        waiting for slots (not part of the notebook's own time)."""
        asked = time.monotonic()
        async with self.ahead:
            waited = time.monotonic() - asked
            status("starting kernel")
            await runner.start()
            status("waiting for a free job slot")
            asked = time.monotonic()
            await self.running.acquire()
            waited += time.monotonic() - asked
        try:
            yield waited
        finally:
            self.running.release()


def _usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens}


async def repair_notebook(
    path: str,
    engine: Engine | None,
    options: RepairOptions = RepairOptions(),
    *,
    on_status: Callable[[str], None] | None = None,
    slots: Slots | None = None,
) -> RepairResult:
    """Execute ``path`` and repair it with ``engine`` (None or ``options.check_only``: execute and report only).

    ``on_status`` receives short progress texts ("running cell 2/5", "asking model (attempt 1)"). ``slots``
    bound how many notebooks of a run execute and start kernels at once.
    """
    started = time.monotonic()
    status = on_status or (lambda text: None)
    try:
        notebook = FileNotebook.load(path)
    except NotebookError as exc:
        return RepairResult(path, "error", str(exc), total_seconds=time.monotonic() - started)
    original = notebook.snapshot()
    kernel = options.kernel_name or notebook.nb.metadata.get("kernelspec", {}).get("name") or "python3"
    runner = KernelRunner(kernel_name=kernel, cwd=os.path.dirname(os.path.abspath(path)), timeout=options.timeout,
                          on_cell=lambda number, count: status(f"running cell {number}/{count}"))
    repair = _Repair(notebook, engine, options, runner, status)
    waited = 0.0
    try:
        async with (slots or Slots.for_jobs(1)).turn(runner, status) as waited:
            outcome = await repair.run()
    except NotebookError as exc:
        outcome = ("error", str(exc), None)
    finally:
        await runner.close()
    state, reason, failure = outcome
    if state == "repaired":
        repair.keep_new_outputs()
    return RepairResult(path, state, reason, failure, tuple(repair.attempts), runner.seconds,
                        time.monotonic() - started - waited, notebook, original)


class _Repair:
    """The attempt loop of one notebook."""

    def __init__(self, notebook: FileNotebook, engine: Engine | None, options: RepairOptions, runner: KernelRunner,
                 status: Callable[[str], None]) -> None:
        self.notebook = notebook
        self.engine = engine
        self.options = options
        self.runner = runner
        self.status = status
        self.attempts: list[Attempt] = []

    async def run(self) -> tuple[str, str, CellFailure | None]:
        failure = await self.runner.run(self.notebook)
        if failure is None:
            return "ok", "", None
        if self.engine is None or self.options.check_only:
            return "failed", failure.line(), failure
        for number in range(1, self.options.max_attempts + 1):
            self.status(f"asking model (attempt {number})")
            before = self.notebook.snapshot().cells
            attempt = await self._ask(number, failure)
            if attempt.outcome == "model error":
                self.attempts.append(attempt)
                return "error", f"model request failed: {attempt.message}", failure
            if not attempt.proposals:
                self.attempts.append(attempt)
                return "failed", f"the model proposed no change; {failure.line()}", failure
            for proposal in attempt.proposals:
                self.notebook.apply(proposal)
            start = min(failure.cell_index, _first_difference(before, self.notebook.snapshot().cells))
            self.status(f"re-running from cell {start + 1} (attempt {number})")
            executed = self.runner.seconds
            next_failure = await self.runner.run(self.notebook, start, restart=self.options.restart)
            self.attempts.append(Attempt(
                number, failure, attempt.proposals, attempt.usage, attempt.model_seconds,
                self.runner.seconds - executed, "fixed" if next_failure is None else "still failing",
                next_failure, attempt.message,
            ))
            if next_failure is None:
                return "repaired", f"runs after {number} attempt{'s' if number > 1 else ''}", None
            failure = next_failure
        return "failed", f"still failing after {self.options.max_attempts} attempts: {failure.line()}", failure

    async def _ask(self, number: int, failure: CellFailure) -> Attempt:
        """Run the agent on the failure; its proposals are not applied yet."""
        from kimi_nb.agent import AgentDone, ToolCallRequested, run_agent
        from kimi_nb.context import ContextRequest, ErrorInfo, build
        from kimi_nb.tools import Toolbox

        assert self.engine is not None
        options = self.options
        view = _RunView(self.notebook, self.runner)
        snapshot = view.snapshot()
        prompt = REPAIR_PROMPT.format(index=failure.cell_index, cell_id=failure.cell_id)
        request = ContextRequest(prompt, snapshot=snapshot,
                                 error=ErrorInfo(failure.cell_id, failure.ename, failure.evalue, failure.traceback))
        messages = build(request, budget=options.context_budget, redact_secrets=options.redact_secrets).messages
        toolbox = Toolbox(view)
        usage, message, started = Usage(), "", time.monotonic()
        try:
            async for event in run_agent(self.engine, messages, toolbox, max_steps=options.max_steps,
                                         max_tokens=options.max_tokens, thinking=options.thinking,
                                         model=options.model):
                if isinstance(event, ToolCallRequested):
                    self.status(f"asking model (attempt {number}): {event.call.name}")
                elif isinstance(event, AgentDone):
                    usage, message = event.usage, event.final_message.content
        except EngineError as exc:
            return Attempt(number, failure, (), usage, time.monotonic() - started, 0.0, "model error",
                           message=str(exc))
        outcome = "proposed" if toolbox.proposals else "no change"
        return Attempt(number, failure, tuple(toolbox.proposals), usage, time.monotonic() - started, 0.0, outcome,
                       message=message.strip())

    def keep_new_outputs(self) -> None:
        """Give the edited code cells the outputs of their successful run (other cells keep theirs)."""
        edited = {p.cell_id for attempt in self.attempts for p in attempt.proposals if p.kind != "delete"}
        for cell in self.notebook.snapshot().cells:
            if cell.id in edited and cell.type == "code" and cell.id in self.runner.outputs:
                node = self.notebook.cell(cell.id)
                node["outputs"], node["execution_count"] = self.runner.outputs[cell.id]


class _RunView:
    """The notebook as the model sees it: the file's cells with the outputs of this run where a cell ran."""

    caps: frozenset[str] = frozenset()

    def __init__(self, notebook: FileNotebook, runner: KernelRunner) -> None:
        self.notebook = notebook
        self.runner = runner

    def snapshot(self) -> NotebookSnapshot:
        snapshot = self.notebook.snapshot()
        ran = self.runner.outputs
        cells = tuple(replace(cell, outputs=tuple(ran[cell.id][0]), execution_count=ran[cell.id][1])
                      if cell.id in ran else cell for cell in snapshot.cells)
        return replace(snapshot, cells=cells)

    def inspect_variable(self, name: str) -> str:
        raise ToolError("variables cannot be inspected during a repair")


def _first_difference(before: tuple[Any, ...], after: tuple[Any, ...]) -> int:
    """Index of the first cell whose id or source changed (the length of the shorter when one is a prefix)."""
    for index, (old, new) in enumerate(zip(before, after)):
        if old.id != new.id or old.source != new.source:
            return index
    return min(len(before), len(after))
