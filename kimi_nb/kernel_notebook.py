"""The kernel's notebook for the magics: past cells from IPython history, their results, errors and figures.

Cells are addressed by execution count: the cell run as ``In [3]`` has the id ``"In[3]"``, the id the model sees
and names in its proposals. Outputs come from what the kernel itself knows: ``Out[n]`` as an execute_result,
the error recorded for that execution (ename, evalue, traceback), and images displayed while kimi-nb was
loaded (matplotlib figures). Printed output is not kept by IPython and so is not part of a cell. Cells that
are kimi-nb magics themselves are left out: their prompts are not notebook content.
"""

from __future__ import annotations

import base64
import contextlib
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from kimi_nb.errors import KimiError, ToolError
from kimi_nb.notebook import Cell, NotebookSnapshot

__all__ = ["CellError", "KernelNotebook", "cell_id", "describe_value", "execution_count_of"]

_ID = re.compile(r"^\s*(?:In\s*\[\s*(\d+)\s*\]|(\d+))\s*$")
_SLICE = re.compile(r"^\s*(-?\d*)\s*:\s*(-?\d*)\s*$")
_KIMI_MAGIC = re.compile(r"^\s*%%?kimi\b")
_VARIABLE_PATH = re.compile(r"^[A-Za-z]\w*(?:\.[A-Za-z]\w*)*$")
_REPR_LIMIT = 600
_IMAGES_KEPT = 8


@dataclass(frozen=True)
class CellError:
    """The exception one execution raised, as text (the nbformat ``error`` output fields)."""

    ename: str
    evalue: str
    traceback: tuple[str, ...]

    @classmethod
    def from_exception(cls, exc: BaseException) -> CellError:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/IPython/" not in f.filename]
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
        lines += traceback.format_exception_only(type(exc), exc)
        return cls(type(exc).__name__, str(exc), tuple(line.rstrip("\n") for line in lines))

    def output(self) -> dict[str, Any]:
        return {"output_type": "error", "ename": self.ename, "evalue": self.evalue, "traceback": list(self.traceback)}

    def text(self) -> str:
        return "\n".join(self.traceback) if self.traceback else f"{self.ename}: {self.evalue}"


def cell_id(execution_count: int) -> str:
    """The id of the cell run as ``In [n]``."""
    return f"In[{execution_count}]"


def execution_count_of(cell_ref: str) -> int:
    """The execution count named by ``"In[3]"`` or ``"3"``; raises ToolError otherwise."""
    match = _ID.match(cell_ref)
    if not match:
        raise ToolError(f"{cell_ref!r} is not a cell id of this kernel; ids look like In[3]")
    return int(match.group(1) or match.group(2))


class KernelNotebook:
    """NotebookBackend over the running IPython session (the ``variables`` cap: inspect kernel variables).

    ``attach()`` starts recording errors, cell ids sent by the frontend, and displayed images; ``detach()``
    stops. Nothing here runs model-written code: variables are only looked up by name in ``user_ns``.
    """

    caps = frozenset({"variables"})

    def __init__(self, ipython: Any) -> None:
        self.ipython = ipython
        self.errors: dict[int, CellError] = {}
        self.frontend_cell_ids: dict[int, str] = {}
        self.images: list[tuple[int, str]] = []  # (execution count, base64 PNG), oldest first

    # -- recording -------------------------------------------------------------------------------------------
    def attach(self) -> None:
        events = self.ipython.events
        events.register("pre_run_cell", self._pre_run_cell)
        events.register("post_run_cell", self._post_run_cell)
        register_hook = getattr(self.ipython.display_pub, "register_hook", None)
        if register_hook is not None:  # ipykernel: see every display_data message
            register_hook(self._display_hook)

    def detach(self) -> None:
        for name, callback in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                self.ipython.events.unregister(name, callback)
            except ValueError:
                pass
        unregister_hook = getattr(self.ipython.display_pub, "unregister_hook", None)
        if unregister_hook is not None:
            unregister_hook(self._display_hook)

    def _pre_run_cell(self, info: Any) -> None:
        frontend_id = getattr(info, "cell_id", None)
        if frontend_id:
            self.frontend_cell_ids[self.ipython.execution_count] = frontend_id

    def _post_run_cell(self, result: Any) -> None:
        error = result.error_before_exec or result.error_in_exec
        if error is not None and result.execution_count is not None:
            self.errors[result.execution_count] = CellError.from_exception(error)

    def _display_hook(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("msg_type", msg.get("header", {}).get("msg_type")) in ("display_data", "update_display_data"):
            png = msg.get("content", {}).get("data", {}).get("image/png")
            if isinstance(png, str):
                count = self.ipython.execution_count
                if getattr(self.ipython.display_pub, "_in_post_execute", False):
                    count -= 1  # newer IPython counts the next cell while figures are flushed after this one
                self.images.append((count, png))
                del self.images[:-_IMAGES_KEPT]
        return msg

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def current(self) -> int:
        """The execution count of the cell running now."""
        return int(self.ipython.execution_count)

    def source(self, count: int) -> str:
        history = self.ipython.history_manager.input_hist_raw
        if not 0 < count < len(history):
            raise ToolError(f"there is no cell {cell_id(count)} in this session")
        return history[count]

    def output_text(self, count: int) -> str:
        """``repr`` of ``Out[count]`` (truncated), or "" when that cell had no result."""
        out = self.ipython.history_manager.output_hist
        return _truncated_repr(out[count]) if count in out else ""

    def error(self, count: int) -> CellError | None:
        return self.errors.get(count)

    def last_error(self) -> tuple[int, CellError]:
        """The latest failed cell (not a kimi cell) and its error; falls back to ``sys.last_value``
        (an error raised before kimi-nb was loaded), attributed to the previous cell."""
        for count in sorted(self.errors, reverse=True):
            if count < self.current and not _KIMI_MAGIC.match(self._source_or_empty(count)):
                return count, self.errors[count]
        last = getattr(sys, "last_value", None)
        if last is not None and self.current > 1:
            return self.current - 1, CellError.from_exception(last)
        raise KimiError("no failed cell to look at: run the cell that fails first, then %kimi fix")

    def last_figure(self) -> str | None:
        """Base64 PNG of the last figure: the last image displayed, else the current pyplot figure (if pyplot
        was already imported by the user; kimi-nb never imports matplotlib itself)."""
        if self.images:
            return self.images[-1][1]
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or not pyplot.get_fignums():
            return None
        import io

        buffer = io.BytesIO()
        pyplot.gcf().savefig(buffer, format="png", bbox_inches="tight")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def past_counts(self) -> list[int]:
        """Execution counts of the earlier cells that are notebook content (not kimi magics)."""
        return [n for n in range(1, self.current) if not _KIMI_MAGIC.match(self._source_or_empty(n))
                and self._source_or_empty(n).strip()]

    def select(self, spec: str | None) -> list[int]:
        """The execution counts a ``-c/--cells`` spec names: a slice of the past cells (``-3:``, ``:5``) or
        ids separated by commas or spaces (``In[3],In[5]`` or ``3 5``). None: all past cells."""
        past = self.past_counts()
        if spec is None:
            return past
        match = _SLICE.match(spec)
        if match:
            start, stop = (int(x) if x else None for x in match.groups())
            return past[slice(start, stop)]
        counts = [execution_count_of(part) for part in re.split(r"[,\s]+(?![^\[]*\])", spec.strip()) if part]
        for count in counts:
            self.source(count)  # raises for unknown cells
        return counts

    def cell(self, count: int) -> Cell:
        outputs: list[dict[str, Any]] = []
        outputs += [{"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}
                    for n, png in self.images if n == count]
        text = self.output_text(count)
        if text:
            outputs.append({"output_type": "execute_result", "execution_count": count,
                            "data": {"text/plain": text}, "metadata": {}})
        if count in self.errors:
            outputs.append(self.errors[count].output())
        return Cell(cell_id(count), "code", self.source(count), tuple(outputs), count)

    def snapshot(self, counts: list[int] | None = None) -> NotebookSnapshot:
        """The chosen cells (default: all past cells) as a NotebookSnapshot; the active cell is the one that
        is running now (the magic's own cell, not included)."""
        chosen = self.past_counts() if counts is None else counts
        return NotebookSnapshot(tuple(self.cell(n) for n in chosen), "python", "", cell_id(self.current))

    def inspect_variable(self, name: str) -> str:
        """Type, shape/len, dtype and truncated repr of a user variable, or of an attribute path such as
        ``df.columns`` (plain attribute lookups only; private names are refused)."""
        if not _VARIABLE_PATH.match(name):
            raise ToolError(f"{name!r} is not a variable name; pass a name such as df or df.columns")
        first, *attributes = name.split(".")
        hidden = getattr(self.ipython, "user_ns_hidden", {})
        if first not in self.ipython.user_ns or first in hidden:
            raise ToolError(f"there is no variable named {first} in the kernel")
        value = self.ipython.user_ns[first]
        for depth, attribute in enumerate(attributes, start=2):
            try:
                value = getattr(value, attribute)
            except Exception:  # noqa: BLE001 (a user property may raise anything)
                raise ToolError(f"{'.'.join(name.split('.')[:depth])} does not exist") from None
        return describe_value(name, value)

    def variables_in(self, source: str) -> list[str]:
        """Short summaries of the user's variables named in ``source`` (for %kimi fix / explain)."""
        names = dict.fromkeys(re.findall(r"[A-Za-z_]\w*", source))
        hidden = getattr(self.ipython, "user_ns_hidden", {})
        user_ns = self.ipython.user_ns
        return [describe_value(n, user_ns[n], limit=160) for n in names
                if n in user_ns and n not in hidden and not n.startswith("_")
                and not callable(user_ns[n]) and type(user_ns[n]).__name__ != "module"]

    def _source_or_empty(self, count: int) -> str:
        history = self.ipython.history_manager.input_hist_raw
        return history[count] if 0 < count < len(history) else ""


def describe_value(name: str, value: Any, *, limit: int = _REPR_LIMIT) -> str:
    """One short description of a value: ``name: type, shape, dtype, len = repr``."""
    kind = type(value)
    parts = [f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__]
    for attribute in ("shape", "dtype"):
        try:
            found = getattr(value, attribute, None)
        except Exception:  # noqa: BLE001 (user objects may raise anything)
            found = None
        if found is not None and not callable(found):
            parts.append(f"{attribute}={found}")
    with contextlib.suppress(Exception):  # no len(), or a user __len__ that fails
        parts.append(f"len={len(value)}")
    return f"{name}: {', '.join(parts)} = {_truncated_repr(value, limit)}"


def _truncated_repr(value: Any, limit: int = _REPR_LIMIT) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 (a user __repr__ may raise anything)
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
