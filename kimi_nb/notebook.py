"""The notebook abstraction the tools work on: Cell, NotebookSnapshot, the backend protocol, and the file backend.

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Cell", "NotebookSnapshot", "NotebookBackend"]


@dataclass(frozen=True)
class Cell:
    """One cell. ``outputs`` are nbformat output dicts (as in the .ipynb file / the JupyterLab model)."""

    id: str
    type: str  # "code" | "markdown" | "raw"
    source: str
    outputs: tuple[dict[str, Any], ...] = ()
    execution_count: int | None = None


@dataclass(frozen=True)
class NotebookSnapshot:
    """The notebook as the model may see it, at one moment."""

    cells: tuple[Cell, ...]
    language: str = "python"
    path: str = ""
    active_cell_id: str | None = None


class NotebookBackend(Protocol):
    """Where a front door's notebook lives. ``caps`` names optional abilities: "variables" (inspect_variable)."""

    caps: frozenset[str]

    def snapshot(self) -> NotebookSnapshot:
        """The current state of the notebook."""

    def inspect_variable(self, name: str) -> str:
        """Type, shape/len, dtype and a truncated repr of a kernel variable (only with the "variables" cap)."""
