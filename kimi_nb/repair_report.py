"""The record of a `kimi-nb repair` run: the JSON report file and the summary table printed at the end."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kimi_nb.notebook import write_text_atomic
from kimi_nb.repair import STATUSES, RepairResult
from kimi_nb.repair_progress import STATUS_STYLES

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Outcome", "print_summary", "report_json", "write_report"]


@dataclass(frozen=True)
class Outcome:
    """A notebook's result and what the command did with it: the path written, if any."""

    result: RepairResult
    written: str | None = None


def report_json(outcomes: list[Outcome], *, engine: str | None, interrupted: bool, seconds: float) -> dict[str, Any]:
    """The report: one entry per notebook (status, reason, attempts with diffs, tokens, durations) and totals."""
    counts = Counter(outcome.result.status for outcome in outcomes)
    return {
        "engine": engine,
        "interrupted": interrupted,
        "seconds": round(seconds, 3),
        "summary": {status: counts.get(status, 0) for status in STATUSES},
        "notebooks": [{**outcome.result.to_json(), "output": outcome.written} for outcome in outcomes],
    }


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write the report atomically (a partial report after Ctrl+C is still valid JSON). Raises NotebookError."""
    write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def print_summary(console: Console, outcomes: list[Outcome]) -> None:
    """A table of every notebook's status, attempts, tokens and time, then the totals line."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="kimi-nb repair", title_justify="left", header_style="bold")
    for name, justify in (("notebook", "left"), ("status", "left"), ("attempts", "right"), ("tokens", "right"),
                          ("seconds", "right"), ("detail", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for outcome in outcomes:
        result = outcome.result
        usage = result.usage
        style = STATUS_STYLES.get(result.status, "")
        detail = result.reason + (f" -> {outcome.written}" if outcome.written else "")
        table.add_row(escape(result.path), f"[{style}]{result.status}[/{style}]", str(len(result.attempts)),
                      str(usage.prompt_tokens + usage.completion_tokens), f"{result.total_seconds:.1f}",
                      escape(detail))
    console.print(table)
    counts = Counter(outcome.result.status for outcome in outcomes)
    console.print(", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES))
