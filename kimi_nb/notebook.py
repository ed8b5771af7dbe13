"""The notebook abstraction the tools work on: Cell, NotebookSnapshot, the backend protocol, and the file backend.

How cells and outputs read as text for the model lives in ``cell_text``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from kimi_nb.cell_text import source_text
from kimi_nb.errors import NotebookError, ToolError

if TYPE_CHECKING:  # nbformat is imported lazily: `import kimi_nb` stays light
    from nbformat import NotebookNode

    from kimi_nb.tools import Proposal

__all__ = [
    "CELL_TYPES",
    "Cell",
    "FileNotebook",
    "NotebookBackend",
    "NotebookSnapshot",
    "SnapshotNotebook",
    "apply_to_snapshot",
    "new_cell_id",
    "snapshot_from_json",
    "write_text_atomic",
]

CELL_TYPES = ("code", "markdown", "raw")


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

    def index_of(self, cell_id: str) -> int | None:
        """Position of the cell with this id, or None."""
        return next((i for i, cell in enumerate(self.cells) if cell.id == cell_id), None)


class NotebookBackend(Protocol):
    """Where a front door's notebook lives. ``caps`` names optional abilities: "variables" (inspect_variable)."""

    caps: frozenset[str]

    def snapshot(self) -> NotebookSnapshot:
        """The current state of the notebook."""

    def inspect_variable(self, name: str) -> str:
        """Type, shape/len, dtype and a truncated repr of a kernel variable (only with the "variables" cap)."""


def new_cell_id() -> str:
    """A fresh nbformat-style cell id (8 hex characters, as JupyterLab makes them)."""
    return uuid.uuid4().hex[:8]


def _synthetic_id(index: int) -> str:
    """The in-memory id of a cell that has none (notebooks older than nbformat 4.5); stable across loads."""
    return f"cell-{index}"


# ------------------------------------------------------------------------------------------------ snapshots


def _language(metadata: dict[str, Any]) -> str:
    return (
        (metadata.get("kernelspec") or {}).get("language")
        or (metadata.get("language_info") or {}).get("name")
        or "python"
    )


def _plain(value: Any) -> Any:
    """A deep copy as plain dicts/lists (NotebookNode -> dict), so snapshots never alias a live notebook."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def snapshot_from_json(nb: dict[str, Any], path: str = "", *, active_cell_id: str | None = None) -> NotebookSnapshot:
    """A snapshot from nbformat v4 JSON (a parsed .ipynb, or JupyterLab's ``model.toJSON()`` from the browser).

    Lenient about what the browser sends: sources as strings or lists of lines, missing outputs or metadata.
    Cells without an id get ``cell-<index>``.
    """
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError("notebook JSON must be an object with a 'cells' list")
    cells = []
    for index, raw in enumerate(nb["cells"]):
        if not isinstance(raw, dict):
            raise NotebookError(f"notebook JSON cell {index} is not an object")
        cell_type = raw.get("cell_type", "code")
        count = raw.get("execution_count")
        cells.append(
            Cell(
                id=str(raw.get("id") or _synthetic_id(index)),
                type=cell_type if cell_type in CELL_TYPES else "raw",
                source=source_text(raw.get("source")),
                outputs=tuple(_plain(o) for o in raw.get("outputs") or () if isinstance(o, dict)),
                execution_count=count if isinstance(count, int) else None,
            )
        )
    return NotebookSnapshot(tuple(cells), _language(nb.get("metadata") or {}), path, active_cell_id)


def apply_to_snapshot(snapshot: NotebookSnapshot, proposal: Proposal) -> NotebookSnapshot:
    """The snapshot with one proposal applied. Changed code cells lose their outputs and execution count.

    Raises NotebookError when the proposal does not fit (unknown cell, source changed since it was made).
    """
    cells = list(snapshot.cells)
    if proposal.kind == "insert":
        if snapshot.index_of(proposal.cell_id) is not None:
            raise NotebookError(f"cannot insert cell {proposal.cell_id}: a cell with that id exists")
        position = 0 if proposal.after_cell_id is None else _position(snapshot, proposal.after_cell_id) + 1
        cells.insert(position, Cell(proposal.cell_id, proposal.cell_type, proposal.after))
    else:
        position = _position(snapshot, proposal.cell_id)
        _check_before(cells[position].source, proposal)
        if proposal.kind == "delete":
            del cells[position]
        elif proposal.kind in ("edit", "replace"):
            cells[position] = replace(cells[position], source=proposal.after, outputs=(), execution_count=None) \
                if cells[position].type == "code" else replace(cells[position], source=proposal.after)
        else:
            raise NotebookError(f"unknown proposal kind {proposal.kind!r}")
    return replace(snapshot, cells=tuple(cells))


def _position(snapshot: NotebookSnapshot, cell_id: str) -> int:
    position = snapshot.index_of(cell_id)
    if position is None:
        raise NotebookError(f"no cell with id {cell_id!r} in {snapshot.path or 'the notebook'}")
    return position


def _check_before(current: str, proposal: Proposal) -> None:
    if current != proposal.before:
        raise NotebookError(f"cell {proposal.cell_id} changed since the proposal was made; ask again")


class SnapshotNotebook:
    """A backend over a fixed snapshot, e.g. the notebook JSON the JupyterLab sidebar sends with a request.

    Nothing is written anywhere: proposals go back to the front door (the browser applies accepted ones).
    ``apply`` updates the in-memory snapshot, for front doors that keep one across requests.
    """

    def __init__(self, snapshot: NotebookSnapshot, *, caps: frozenset[str] = frozenset()) -> None:
        self._snapshot = snapshot
        self.caps = caps

    @classmethod
    def from_json(cls, nb: dict[str, Any], path: str = "", *, active_cell_id: str | None = None) -> SnapshotNotebook:
        return cls(snapshot_from_json(nb, path, active_cell_id=active_cell_id))

    def snapshot(self) -> NotebookSnapshot:
        return self._snapshot

    def apply(self, proposal: Proposal) -> None:
        self._snapshot = apply_to_snapshot(self._snapshot, proposal)

    def inspect_variable(self, name: str) -> str:
        raise ToolError("this notebook has no running kernel to inspect variables in")


# --------------------------------------------------------------------------------------------- file backend


def write_text_atomic(path: str | os.PathLike[str], text: str, *, backup: bool = False) -> None:
    """Write ``text`` (UTF-8) so that ``path`` is either the old or the new file, never half of one.

    A temporary file in the same folder is written, flushed, fsynced and renamed over ``path``. With
    ``backup``, an existing ``path`` is first copied to ``path + ".bak"``. Raises NotebookError on failure.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if backup and os.path.exists(path):
            shutil.copy2(path, path + ".bak")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if os.path.exists(path):
                shutil.copymode(path, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise NotebookError(f"cannot write {path}: {exc.strerror or exc}") from None


class FileNotebook:
    """An .ipynb file held in memory as an nbformat NotebookNode (``.nb``), for the repair CLI.

    ``apply`` changes the in-memory copy only; ``save`` writes it the way Jupyter does (nbformat's
    canonical JSON), so untouched cells, metadata, ids and attachments stay byte-identical. Notebooks older
    than nbformat 4.5 have no cell ids: ids ``cell-<index>`` are assigned in memory and never written, so
    such files keep their format version.
    """

    caps: frozenset[str] = frozenset()

    def __init__(self, nb: NotebookNode, path: str = "") -> None:
        self.nb = nb
        self.path = path
        self._store_ids = (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5)
        self._ids: list[str] = []
        for index, cell in enumerate(nb.cells):
            if self._store_ids and not cell.get("id"):
                cell["id"] = new_cell_id()
            self._ids.append(cell.get("id") or _synthetic_id(index))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FileNotebook:
        """Read and validate a notebook file (nbformat 3 is converted to 4). Raises NotebookError."""
        import nbformat

        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise NotebookError(f"cannot read {path}: {reason}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotebookError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("nbformat"), int):
            raise NotebookError(f"{path} is not a Jupyter notebook (no nbformat version)")
        if raw["nbformat"] not in (3, 4):
            raise NotebookError(f"{path} uses nbformat {raw['nbformat']}; only versions 3 and 4 are supported")
        try:
            nb = nbformat.convert(nbformat.from_dict(raw), 4) if raw["nbformat"] == 3 else nbformat.from_dict(raw)
            notebook = cls(nb, path)
        except Exception as exc:  # noqa: BLE001 - nbformat's converters fail in many ways on malformed input
            raise NotebookError(f"{path} is not a valid notebook ({type(exc).__name__}: {exc})") from None
        notebook._validate(f"{path} is not a valid notebook")
        return notebook

    def _validate(self, what: str) -> None:
        from nbformat import ValidationError, validate

        try:
            validate(self.nb)
        except ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) if hasattr(exc, "absolute_path") else ""
            detail = str(getattr(exc, "message", exc)).splitlines()[0]
            raise NotebookError(f"{what}: {detail}" + (f" (at {where})" if where else "")) from None

    def snapshot(self) -> NotebookSnapshot:
        cells = tuple(
            Cell(
                id=cell_id,
                type=cell.cell_type,
                source=source_text(cell.source),
                outputs=tuple(_plain(o) for o in cell.get("outputs", ())),
                execution_count=cell.get("execution_count"),
            )
            for cell_id, cell in zip(self._ids, self.nb.cells)
        )
        return NotebookSnapshot(cells, _language(self.nb.metadata), self.path)

    def cell(self, cell_id: str) -> NotebookNode:
        """The nbformat cell node with this id (to set outputs after executing it). Raises NotebookError."""
        return self.nb.cells[self._position(cell_id)]

    def apply(self, proposal: Proposal) -> None:
        """Apply a proposal to the in-memory notebook (nothing is written). Raises NotebookError."""
        from nbformat import v4

        if proposal.kind == "insert":
            if proposal.cell_id in self._ids:
                raise NotebookError(f"cannot insert cell {proposal.cell_id}: a cell with that id exists")
            position = 0 if proposal.after_cell_id is None else self._position(proposal.after_cell_id) + 1
            maker = {"code": v4.new_code_cell, "markdown": v4.new_markdown_cell, "raw": v4.new_raw_cell}
            if proposal.cell_type not in maker:
                raise NotebookError(f"unknown cell type {proposal.cell_type!r}")
            node = maker[proposal.cell_type](proposal.after)
            if self._store_ids:
                node["id"] = proposal.cell_id
            else:
                node.pop("id", None)
            self.nb.cells.insert(position, node)
            self._ids.insert(position, proposal.cell_id)
            return
        position = self._position(proposal.cell_id)
        node = self.nb.cells[position]
        _check_before(source_text(node.source), proposal)
        if proposal.kind == "delete":
            del self.nb.cells[position]
            del self._ids[position]
        elif proposal.kind in ("edit", "replace"):
            node["source"] = proposal.after
            if node.cell_type == "code":
                node["outputs"] = []
                node["execution_count"] = None
        else:
            raise NotebookError(f"unknown proposal kind {proposal.kind!r}")

    def _position(self, cell_id: str) -> int:
        try:
            return self._ids.index(cell_id)
        except ValueError:
            raise NotebookError(f"no cell with id {cell_id!r} in {self.path or 'the notebook'}") from None

    def dumps(self) -> str:
        """The notebook as Jupyter writes it (indent 1, sorted keys, trailing newline). Raises NotebookError."""
        import nbformat

        self._validate(f"refusing to write an invalid notebook{' ' + self.path if self.path else ''}")
        text = nbformat.writes(self.nb, version=nbformat.NO_CONVERT)
        return text if text.endswith("\n") else text + "\n"

    def save(self, path: str | os.PathLike[str] | None = None, *, backup: bool = False) -> str:
        """Write atomically to ``path`` (default: where it was loaded from); returns the path written."""
        target = os.fspath(path) if path is not None else self.path
        if not target:
            raise NotebookError("no path to save the notebook to")
        write_text_atomic(target, self.dumps(), backup=backup)
        return target

    def inspect_variable(self, name: str) -> str:
        raise ToolError("a notebook file has no running kernel to inspect variables in")
