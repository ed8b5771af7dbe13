"""Where `kimi-nb repair` puts its results: output paths, atomic writes, and unified diffs of the changed cells."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from kimi_nb.notebook import FileNotebook, NotebookSnapshot

__all__ = ["OutputPlan", "Source", "cell_diff", "find_notebooks"]

REPAIRED_SUFFIX = ".repaired.ipynb"


@dataclass(frozen=True)
class Source:
    """A notebook to repair: its path and its path relative to the argument it was found under."""

    path: str
    relative: str


def find_notebooks(arguments: list[str]) -> Iterator[Source]:
    """Notebooks named on the command line: files as given, folders searched recursively for ``*.ipynb``
    (skipping ``.ipynb_checkpoints`` and hidden folders, and kimi-nb's own ``*.repaired.ipynb`` outputs)."""
    seen: set[str] = set()
    for argument in arguments:
        if os.path.isdir(argument):
            found = []
            for folder, subfolders, files in os.walk(argument):
                subfolders[:] = sorted(d for d in subfolders if d != ".ipynb_checkpoints" and not d.startswith("."))
                found += [os.path.join(folder, f) for f in files
                          if f.endswith(".ipynb") and not f.endswith(REPAIRED_SUFFIX)]
            sources = [Source(path, os.path.relpath(path, argument)) for path in sorted(found)]
        else:
            sources = [Source(argument, os.path.basename(argument))]
        for source in sources:
            key = os.path.realpath(source.path)
            if key not in seen:
                seen.add(key)
                yield source


@dataclass(frozen=True)
class OutputPlan:
    """Where repaired notebooks go: next to the input (default), over it (``in_place``), or under ``directory``."""

    in_place: bool = False
    directory: str | None = None
    backup: bool = True

    def target(self, source: Source) -> str:
        if self.in_place:
            return source.path
        if self.directory is not None:
            return os.path.join(self.directory, source.relative)
        stem = source.path.removesuffix(".ipynb")
        return stem + REPAIRED_SUFFIX

    def write(self, source: Source, notebook: FileNotebook) -> str:
        """Write atomically (the input is never half-written); returns the path written. Raises NotebookError."""
        target = self.target(source)
        folder = os.path.dirname(target)
        if folder:
            os.makedirs(folder, exist_ok=True)
        return notebook.save(target, backup=self.in_place and self.backup)


def cell_diff(path: str, before: NotebookSnapshot, after: NotebookSnapshot) -> str:
    """A unified diff of the cells that differ (edited, inserted or deleted), one hunk group per cell."""
    old = {cell.id: cell for cell in before.cells}
    new = {cell.id: cell for cell in after.cells}
    parts = []
    for cell_id in [c.id for c in before.cells] + [c.id for c in after.cells if c.id not in old]:
        a, b = old.get(cell_id), new.get(cell_id)
        if a is not None and b is not None and a.source == b.source:
            continue
        label = f"{path} cell {cell_id}"
        lines = difflib.unified_diff(
            _lines(a.source if a else ""), _lines(b.source if b else ""),
            fromfile=f"a/{label}" if a else "/dev/null", tofile=f"b/{label}" if b else "/dev/null",
        )
        parts.append("".join(lines))
    return "".join(parts)


def _lines(source: str) -> list[str]:
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
