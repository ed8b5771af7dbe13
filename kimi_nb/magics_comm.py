"""The kernel side of the kimi-nb labextension comm: put cells into the notebook the magics run in.

Protocol (target ``kimi_nb``, JSON): the labextension opens a comm to the kernel with ``{"version": 1}`` when
it connects. The kernel then sends

- ``{"type": "insert_cell", "source": str, "cell_type": "code"|"markdown", "after_cell_id": str|null}``:
  insert an (unexecuted) cell below the cell ``after_cell_id`` (the frontend id of the magic's cell, from the
  execute_request's ``metadata.cellId``), or below the active cell when null;
- ``{"type": "replace_cell", "cell_id": str, "source": str}``: set that cell's source (an accepted edit; the
  frontend keeps it undoable).

Without the labextension (classic IPython, VS Code, plain Notebook) nothing is connected and the magics fall back
to ``set_next_input``, the payload every frontend supports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TARGET", "LabBridge"]

TARGET = "kimi_nb"


class LabBridge:
    """Holds the comm the labextension opened, if any."""

    def __init__(self) -> None:
        self.comm: Any = None
        self._manager: Any = None

    @property
    def connected(self) -> bool:
        return self.comm is not None

    def register(self, ipython: Any) -> None:
        """Accept the labextension's comm (only in a kernel)."""
        if getattr(ipython, "kernel", None) is None:
            return
        import comm

        self._manager = comm.get_comm_manager()
        self._manager.register_target(TARGET, self._opened)

    def unregister(self) -> None:
        if self._manager is not None:
            self._manager.unregister_target(TARGET, self._opened)
            self._manager = None
        self.comm = None

    def _opened(self, comm: Any, _msg: dict[str, Any]) -> None:
        self.comm = comm

        def closed(_: dict[str, Any]) -> None:
            if self.comm is comm:
                self.comm = None

        comm.on_close(closed)

    def insert_cell(self, source: str, *, cell_type: str, after_cell_id: str | None) -> bool:
        """Ask the labextension to insert a cell; False when no labextension is connected."""
        return self._send({"type": "insert_cell", "source": source, "cell_type": cell_type,
                           "after_cell_id": after_cell_id})

    def replace_cell(self, cell_id: str, source: str) -> bool:
        """Ask the labextension to replace a cell's source; False when no labextension is connected."""
        return self._send({"type": "replace_cell", "cell_id": cell_id, "source": source})

    def _send(self, data: dict[str, Any]) -> bool:
        if self.comm is None:
            return False
        self.comm.send(data)
        return True
