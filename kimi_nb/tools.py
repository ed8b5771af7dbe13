"""The tools the model may call: OpenAI function schemas and their implementations over a NotebookBackend.

Tools only read the notebook snapshot the front door provides and produce ``Proposal``s; they never write
files, run code or touch anything outside the notebook (there is no file tool). Memory tools go to the
MemoryStore the front door passes, if any. What tools return to the model is passed through ``redact``;
proposals that would write a ``[REDACTED:...]`` placeholder into the notebook are refused.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kimi_nb.cell_text import cell_summary, image_outputs, render_cell
from kimi_nb.errors import KimiError, ToolError
from kimi_nb.notebook import (
    CELL_TYPES,
    Cell,
    NotebookBackend,
    NotebookSnapshot,
    apply_to_snapshot,
    new_cell_id,
)
from kimi_nb.protocol import ToolCall
from kimi_nb.redact import redact

if TYPE_CHECKING:
    from kimi_nb.memory import MemoryStore

__all__ = ["TOOL_SCHEMAS", "Image", "Proposal", "ToolResult", "Toolbox", "images_of", "make_diff"]

#: Characters of outputs shown by read_cell before truncating.
READ_OUTPUT_LIMIT = 8000


@dataclass(frozen=True)
class Proposal:
    """A change the model proposes. Front doors decide: apply (repair), or show for Accept / Reject.

    kind: "insert" | "edit" | "replace" | "delete". For "insert", ``cell_id`` is the new cell's id and
    ``after_cell_id`` where it goes (None: at the top); ``before`` is "". For "delete", ``after`` is "".
    """

    kind: str
    cell_id: str
    before: str
    after: str
    diff: str
    cell_type: str = "code"
    after_cell_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cell_id": self.cell_id,
            "before": self.before,
            "after": self.after,
            "diff": self.diff,
            "cell_type": self.cell_type,
            "after_cell_id": self.after_cell_id,
        }


@dataclass(frozen=True)
class Image:
    """An image for the next model turn."""

    mime: str  # "image/png" | "image/jpeg"
    data: str  # base64

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned. ``content`` goes back to the model as the ``role: "tool"`` message."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    proposal: Proposal | None = None
    image: Image | None = None


# ----------------------------------------------------------------------------------------------------- schemas

_CELL_ID = {
    "type": "string",
    "description": "Cell id as shown by list_cells (e.g. \"a1b2c3d4\"), or \"#N\" for the cell at index N.",
}


def _function(name: str, description: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(required)},
        },
    }


#: Every tool, in the fixed order ``Toolbox.schemas()`` offers them (byte-stable for the prefix cache).
TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    _function("list_cells", "List the notebook's cells: index, id, type, execution count, first line, errors.", {}),
    _function(
        "read_cell",
        "Read one cell: its full source and its outputs as text (images are listed; see view_image).",
        {"cell_id": _CELL_ID},
        ("cell_id",),
    ),
    _function(
        "edit_cell",
        "Propose a search/replace edit in a cell. old_text must match exactly once (whitespace included); "
        "include enough lines to make it unique. Returns the diff. The user reviews proposals.",
        {
            "cell_id": _CELL_ID,
            "old_text": {"type": "string", "description": "Exact text to replace, copied from read_cell."},
            "new_text": {"type": "string", "description": "Replacement text."},
        },
        ("cell_id", "old_text", "new_text"),
    ),
    _function(
        "replace_cell",
        "Propose a new full source for a cell (for rewrites; prefer edit_cell for small changes).",
        {"cell_id": _CELL_ID, "source": {"type": "string", "description": "The cell's new source."}},
        ("cell_id", "source"),
    ),
    _function(
        "insert_cell",
        "Propose a new cell.",
        {
            "source": {"type": "string", "description": "Source of the new cell."},
            "cell_type": {"type": "string", "enum": list(CELL_TYPES), "description": "Default \"code\"."},
            "after_cell_id": {
                "type": "string",
                "description": "Insert after this cell (id or \"#N\"); \"top\" for the start; omit to append at the end.",
            },
        },
        ("source",),
    ),
    _function("delete_cell", "Propose deleting a cell.", {"cell_id": _CELL_ID}, ("cell_id",)),
    _function(
        "inspect_variable",
        "Inspect a variable in the running kernel: type, shape/len, dtype and a short repr. Runs no code.",
        {"name": {"type": "string", "description": "Variable name, or a dotted attribute path like df.columns."}},
        ("name",),
    ),
    _function(
        "view_image",
        "Look at an image (plot) a cell produced; it is attached to your next turn.",
        {
            "cell_id": _CELL_ID,
            "output_index": {"type": "integer", "description": "Which of the cell's images, from 0 (default 0)."},
        },
        ("cell_id",),
    ),
    _function(
        "memory_create",
        "Save a persistent note about the user or project (preferences, facts) for future sessions.",
        {
            "key": {"type": "string", "description": "Short unique name, e.g. \"plot-style\"."},
            "content": {"type": "string", "description": "The note."},
        },
        ("key", "content"),
    ),
    _function(
        "memory_read",
        "Search saved notes by keywords over keys and contents; an empty query lists them all.",
        {"query": {"type": "string", "description": "Keywords; \"\" for all."}},
    ),
    _function(
        "memory_update",
        "Replace the content of a saved note.",
        {"key": {"type": "string", "description": "The note's key."}, "content": {"type": "string"}},
        ("key", "content"),
    ),
    _function(
        "memory_delete",
        "Delete a saved note.",
        {"key": {"type": "string", "description": "The note's key."}},
        ("key",),
    ),
)

_SCHEMA_BY_NAME = {schema["function"]["name"]: schema for schema in TOOL_SCHEMAS}
_MEMORY_TOOLS = frozenset(name for name in _SCHEMA_BY_NAME if name.startswith("memory_"))
_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,)}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_INDEX_REF = re.compile(r"^#?(-?\d+)$")
_PLACEHOLDER = "[REDACTED:"


def _refuse_placeholders(after: str, before: str) -> None:
    """Secrets are masked in what the model sees: never let a mask be written back over the real value."""
    if after.count(_PLACEHOLDER) > before.count(_PLACEHOLDER):
        raise ToolError("the new text contains a [REDACTED:...] placeholder, which would overwrite a hidden secret; "
                        "use edit_cell on the lines around it and leave the secret's line unchanged")


def make_diff(before: str, after: str, cell_id: str, *, kind: str = "edit") -> str:
    """A unified diff of a cell's source, with headers naming the cell (``a/cell-ID`` / ``b/cell-ID``)."""
    fromfile = "/dev/null" if kind == "insert" else f"a/cell-{cell_id}"
    tofile = "/dev/null" if kind == "delete" else f"b/cell-{cell_id}"
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile, tofile, lineterm="")
    return "\n".join(lines)


def images_of(cell: Cell) -> list[Image]:
    """The cell's PNG/JPEG outputs as Images, in output order (e.g. the last figure for a context request)."""
    return [Image(mime, data) for _, mime, data in image_outputs(cell)]


class Toolbox:
    """The tools over one backend, for one agent run.

    Keeps a working copy of the backend's snapshot with the proposals made so far applied virtually, so the
    model's later reads and edits see its own changes. ``proposals`` lists them in order; applying them in
    that order to the backend's notebook reproduces ``snapshot``. ``call`` never raises for tool problems:
    they come back as ``ToolResult(is_error=True)`` with one line telling the model what to do.
    """

    def __init__(self, backend: NotebookBackend, *, memory: MemoryStore | None = None,
                 redact_secrets: bool = True) -> None:
        self.backend = backend
        self.memory = memory
        self.redact_secrets = redact_secrets
        self.snapshot: NotebookSnapshot = backend.snapshot()
        self.proposals: list[Proposal] = []
        self._handlers: dict[str, Callable[..., Any]] = {
            "list_cells": self._list_cells,
            "read_cell": self._read_cell,
            "edit_cell": self._edit_cell,
            "replace_cell": self._replace_cell,
            "insert_cell": self._insert_cell,
            "delete_cell": self._delete_cell,
            "inspect_variable": self._inspect_variable,
            "view_image": self._view_image,
            "memory_create": self._memory_create,
            "memory_read": self._memory_read,
            "memory_update": self._memory_update,
            "memory_delete": self._memory_delete,
        }

    def names(self) -> list[str]:
        """The tools offered for this backend and memory store, in schema order."""
        return [name for name in _SCHEMA_BY_NAME if self._offered(name)]

    def _offered(self, name: str) -> bool:
        if name == "inspect_variable":
            return "variables" in self.backend.caps
        if name in _MEMORY_TOOLS:
            return self.memory is not None
        return True

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function declarations of the offered tools: same order and same JSON on every call."""
        return [json.loads(json.dumps(_SCHEMA_BY_NAME[name])) for name in self.names()]

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one tool call. Problems come back as an error result, never as an exception."""
        try:
            arguments = self._check(call)
            outcome = self._handlers[call.name](**arguments)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except KimiError as exc:
            return ToolResult(call.id, call.name, self._clean(f"Error: {exc}"), is_error=True)
        except Exception as exc:  # noqa: BLE001 - odd notebook data must not end the user's run; the model is told
            message = f"Error: {call.name} failed unexpectedly ({type(exc).__name__}: {exc}); try another way"
            return ToolResult(call.id, call.name, self._clean(" ".join(message.split())), is_error=True)
        if isinstance(outcome, ToolResult):
            return replace(outcome, call_id=call.id, name=call.name, content=self._clean(outcome.content))
        if isinstance(outcome, Proposal):
            self.snapshot = apply_to_snapshot(self.snapshot, outcome)
            self.proposals.append(outcome)
            verb = {"insert": "insert of", "delete": "deletion of"}.get(outcome.kind, f"{outcome.kind} to")
            content = f"Proposed {verb} cell {outcome.cell_id}:\n{outcome.diff}"
            return ToolResult(call.id, call.name, self._clean(content), proposal=outcome)
        return ToolResult(call.id, call.name, self._clean(str(outcome)))

    def _clean(self, text: str) -> str:
        return redact(text) if self.redact_secrets else text

    # ------------------------------------------------------------------------------------------- arguments

    def _check(self, call: ToolCall) -> dict[str, Any]:
        if call.error:
            raise ToolError(f"the call to {call.name or 'a tool'} was not run ({call.error}); "
                            "send it again with valid JSON arguments")
        if call.name not in _SCHEMA_BY_NAME or not self._offered(call.name):
            raise ToolError(f"unknown tool {call.name!r}; available tools: {', '.join(self.names())}")
        parameters = _SCHEMA_BY_NAME[call.name]["function"]["parameters"]
        properties, arguments = parameters["properties"], dict(call.arguments)
        unexpected = sorted(set(arguments) - set(properties))
        if unexpected:
            raise ToolError(f"{call.name} got unexpected argument(s) {', '.join(unexpected)}; "
                            f"it takes: {', '.join(properties) or 'no arguments'}")
        missing = [name for name in parameters["required"] if arguments.get(name) is None]
        if missing:
            raise ToolError(f"{call.name} needs argument(s) {', '.join(missing)}")
        for name, value in list(arguments.items()):
            if value is None:
                del arguments[name]
                continue
            expected = properties[name].get("type")
            if expected == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
                arguments[name] = value = int(value)
            if expected in _JSON_TYPES and (not isinstance(value, _JSON_TYPES[expected]) or isinstance(value, bool)):
                raise ToolError(f"{call.name} argument {name} must be a {expected}, got {type(value).__name__}")
        return arguments

    def _find(self, ref: str) -> tuple[int, Cell]:
        """A cell of the working copy by id, or by "#N" / "N" index when no cell has that id."""
        cells = self.snapshot.cells
        ref = ref.strip()
        index = self.snapshot.index_of(ref)
        if index is None and (match := _INDEX_REF.match(ref)):
            index = int(match.group(1))
            if not 0 <= index < len(cells):
                raise ToolError(f"there is no cell #{index}; the notebook has {len(cells)} cells (#0-#{len(cells) - 1})")
        if index is None:
            raise ToolError(f"no cell with id {ref!r}; call list_cells to see the cell ids")
        return index, cells[index]

    # --------------------------------------------------------------------------------------------- notebook

    def _list_cells(self) -> str:
        cells = self.snapshot.cells
        if not cells:
            return "The notebook has no cells."
        name = self.snapshot.path or "notebook"
        lines = [cell_summary(cell, index) for index, cell in enumerate(cells)]
        return f"{name} ({self.snapshot.language}, {len(cells)} cells):\n" + "\n".join(lines)

    def _read_cell(self, cell_id: str) -> str:
        index, cell = self._find(cell_id)
        return render_cell(cell, index, output_limit=READ_OUTPUT_LIMIT, language=self.snapshot.language)

    def _edit_cell(self, cell_id: str, old_text: str, new_text: str) -> Proposal:
        _, cell = self._find(cell_id)
        if not old_text:
            raise ToolError("old_text is empty; copy the exact text to change from read_cell "
                            "(or use replace_cell to rewrite the whole cell)")
        count = cell.source.count(old_text)
        if count == 0:
            hint = " (it matches if surrounding whitespace is ignored; copy it exactly)" \
                if old_text.strip() and old_text.strip() in cell.source else ""
            if _PLACEHOLDER in old_text:
                hint = " (it contains a [REDACTED:...] placeholder: the real value is hidden; edit around it)"
            raise ToolError(f"old_text was not found in cell {cell.id}{hint}; read_cell it and copy the exact text")
        if count > 1:
            raise ToolError(f"old_text occurs {count} times in cell {cell.id}; include more surrounding "
                            "lines so it matches exactly once")
        if old_text == new_text:
            raise ToolError("new_text equals old_text; nothing to change")
        return self._change("edit", cell, cell.source.replace(old_text, new_text, 1))

    def _replace_cell(self, cell_id: str, source: str) -> Proposal:
        _, cell = self._find(cell_id)
        if source == cell.source:
            raise ToolError(f"cell {cell.id} already has exactly this source; nothing to change")
        return self._change("replace", cell, source)

    def _change(self, kind: str, cell: Cell, after: str) -> Proposal:
        _refuse_placeholders(after, cell.source)
        return Proposal(kind, cell.id, cell.source, after, make_diff(cell.source, after, cell.id, kind=kind), cell.type)

    def _insert_cell(self, source: str, cell_type: str = "code", after_cell_id: str | None = None) -> Proposal:
        if cell_type not in CELL_TYPES:
            raise ToolError(f"cell_type must be one of {', '.join(CELL_TYPES)}, got {cell_type!r}")
        cells = self.snapshot.cells
        if after_cell_id is None:
            after = cells[-1].id if cells else None
        elif after_cell_id.strip().lower() == "top" and self.snapshot.index_of(after_cell_id) is None:
            after = None
        else:
            after = self._find(after_cell_id)[1].id
        _refuse_placeholders(source, "")
        cell_id = new_cell_id()
        while self.snapshot.index_of(cell_id) is not None:
            cell_id = new_cell_id()
        return Proposal("insert", cell_id, "", source, make_diff("", source, cell_id, kind="insert"), cell_type, after)

    def _delete_cell(self, cell_id: str) -> Proposal:
        _, cell = self._find(cell_id)
        return Proposal("delete", cell.id, cell.source, "", make_diff(cell.source, "", cell.id, kind="delete"),
                        cell.type)

    async def _inspect_variable(self, name: str) -> str:
        name = name.strip()
        if not _VARIABLE_NAME.match(name):
            raise ToolError(f"{name!r} is not a variable name; pass a name or dotted attribute path like df.columns")
        try:
            outcome = self.backend.inspect_variable(name)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except KimiError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend problem must reach the model as a tool error, not end the run
            raise ToolError(f"could not inspect {name}: {type(exc).__name__}: {exc}") from None
        return str(outcome)

    def _view_image(self, cell_id: str, output_index: int = 0) -> ToolResult:
        _, cell = self._find(cell_id)
        images = images_of(cell)
        if not images:
            raise ToolError(f"cell {cell.id} has no image outputs")
        if not 0 <= output_index < len(images):
            raise ToolError(f"cell {cell.id} has {len(images)} image(s); output_index must be 0-{len(images) - 1}")
        image = images[output_index]
        size = len(image.data) * 3 // 4 // 1024
        return ToolResult("", "view_image", f"Image {output_index} of cell {cell.id} ({image.mime}, {size} KB) "
                          "is attached below.", image=image)

    # ----------------------------------------------------------------------------------------------- memory

    def _memory_create(self, key: str, content: str) -> str:
        memory = self._store().create(key, content)
        return f"Saved note {memory.key!r}."

    def _memory_read(self, query: str = "") -> str:
        found = self._store().read(query)
        if not found:
            return "No saved notes match." if query.strip() else "There are no saved notes."
        return "\n".join(f"- {m.key}: {m.content}" for m in found)

    def _memory_update(self, key: str, content: str) -> str:
        memory = self._store().update(key, content)
        return f"Updated note {memory.key!r}."

    def _memory_delete(self, key: str) -> str:
        self._store().delete(key)
        return f"Deleted note {key.strip()!r}."

    def _store(self) -> MemoryStore:
        assert self.memory is not None  # memory tools are only offered with a store
        return self.memory
