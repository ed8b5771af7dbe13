"""Progress of `kimi-nb repair` on screen: a live rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from kimi_nb.repair import RepairResult

__all__ = ["STATUS_STYLES", "Display", "LineDisplay", "LiveDisplay", "open_display"]

STATUS_STYLES = {"ok": "green", "repaired": "cyan", "failed": "red", "error": "magenta"}


class Display(Protocol):
    """What the command tells the screen; ``close()`` ends a live display."""

    def update(self, path: str, text: str) -> None: ...

    def finish(self, result: RepairResult, written: str | None) -> None: ...

    def close(self) -> None: ...


def _outcome(result: RepairResult, written: str | None) -> str:
    parts = [result.status]
    if result.reason:
        parts.append(result.reason)
    if written:
        parts.append(f"written to {written}")
    return " — ".join(parts)


class LineDisplay:
    """One plain line per step (for logs: a hanging cell shows as the last "running cell k/n" line);
    ``quiet`` prints nothing."""

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet

    def update(self, path: str, text: str) -> None:
        if not self.quiet:
            print(f"{path}: {text}", file=self.stream, flush=True)

    def finish(self, result: RepairResult, written: str | None) -> None:
        if not self.quiet:
            print(f"{result.path}: {_outcome(result, written)}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A live table: one row per notebook with its current step (running cell k/n, asking model, attempt i)."""

    def __init__(self, console: Console, paths: list[str]) -> None:
        from rich.live import Live

        self.rows: dict[str, str] = {path: "[dim]waiting[/dim]" for path in paths}
        self.live = Live(self._table(), console=console, refresh_per_second=8, transient=True)
        self.live.start()

    def _table(self) -> object:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", expand=False, box=None)
        table.add_column("notebook", overflow="fold")
        table.add_column("state", overflow="fold")
        for path, state in self.rows.items():
            table.add_row(path, state)
        return table

    def update(self, path: str, text: str) -> None:
        from rich.markup import escape

        self.rows[path] = escape(text)
        self.live.update(self._table())

    def finish(self, result: RepairResult, written: str | None) -> None:
        from rich.markup import escape

        style = STATUS_STYLES.get(result.status, "")
        self.rows[result.path] = f"[{style}]{escape(_outcome(result, written))}[/{style}]"
        self.live.update(self._table())

    def close(self) -> None:
        self.live.stop()


def open_display(console: Console, paths: list[str], *, quiet: bool) -> Display:
    """The live table on a terminal (unless quiet), plain lines otherwise."""
    if console.is_terminal and not quiet:
        return LiveDisplay(console, paths)
    return LineDisplay(sys.stdout, quiet=quiet)
