"""Executing a notebook's cells for `kimi-nb repair`: one nbclient kernel, the first failing cell, clean shutdown."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from kimi_nb.cell_text import clean_traceback
from kimi_nb.errors import NotebookError
from kimi_nb.notebook import FileNotebook

__all__ = ["CellFailure", "KernelRunner"]

@dataclass(frozen=True)
class CellFailure:
    """Why a cell did not run: an exception in the kernel, a timeout or a dead kernel."""

    cell_id: str
    cell_index: int
    ename: str
    evalue: str
    traceback: str = ""

    def line(self) -> str:
        """One line for the screen and the report."""
        return f"cell {self.cell_index + 1} ({self.cell_id}) failed: {self.ename}: {self.evalue}"

    def to_json(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "cell_index": self.cell_index, "ename": self.ename,
                "evalue": self.evalue, "traceback": self.traceback}


class KernelRunner:
    """A kernel running one notebook's code cells in its folder; ``run(notebook, start)`` gives the first failure.

    The kernel persists between runs (a repair re-executes from the edited cell); after a timeout or a
    crash, or with ``restart=True``, the next run starts a fresh kernel and executes from the top.
    ``on_cell(k, n)`` is called before cell k (1-based) of n runs. ``outputs`` holds the last outputs and
    execution count of each cell run, by cell id; ``seconds`` the time spent starting kernels and executing.
    """

    def __init__(self, *, kernel_name: str, cwd: str, timeout: float | None,
                 on_cell: Callable[[int, int], None] | None = None) -> None:
        self.kernel_name = kernel_name
        self.cwd = cwd
        self.timeout = timeout
        self.on_cell = on_cell
        self.outputs: dict[str, tuple[list[dict[str, Any]], int | None]] = {}
        self.seconds = 0.0
        self._client: Any = None
        self._dirty = False

    async def start(self) -> None:
        """Start a fresh kernel (raises NotebookError when the kernel is not installed or does not start)."""
        import nbformat
        from jupyter_client.kernelspec import NoSuchKernel
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        await self.close()
        started = time.monotonic()
        manager = AsyncKernelManager(kernel_name=self.kernel_name)
        client = NotebookClient(nbformat.v4.new_notebook(), km=manager, kernel_name=self.kernel_name,
                                timeout=None if self.timeout is None else max(1, round(self.timeout)),
                                allow_errors=False, record_timing=False)
        try:
            await client.async_start_new_kernel(cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await client.async_start_new_kernel_client()
        except NoSuchKernel:
            await self._shutdown(client)
            raise NotebookError(f"kernel {self.kernel_name!r} is not installed (see `jupyter kernelspec list`, "
                                "or pass --kernel NAME)") from None
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._shutdown(client)
            if isinstance(exc, Exception):
                raise NotebookError(f"kernel {self.kernel_name!r} did not start: {exc}") from None
            raise
        finally:
            self.seconds += time.monotonic() - started
        self._client = client
        self._dirty = False

    async def run(self, notebook: FileNotebook, start: int = 0, *, restart: bool = False) -> CellFailure | None:
        """Execute the notebook's code cells from index ``start``; None when all ran.

        A fresh kernel (after a timeout or crash, on the first run, or with ``restart``) runs from the top."""
        if restart or self._client is None or self._dirty:
            await self.start()
            start = 0
        started = time.monotonic()
        try:
            return await self._run(notebook, start)
        finally:
            self.seconds += time.monotonic() - started

    async def _run(self, notebook: FileNotebook, start: int) -> CellFailure | None:
        import nbformat
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        client = self._client
        cells = notebook.snapshot().cells
        nodes = notebook.nb.cells
        for index, cell in enumerate(cells):
            if index < start or cell.type != "code" or not cell.source.strip():
                continue
            if self.on_cell is not None:
                self.on_cell(index + 1, len(cells))
            node = nbformat.v4.new_code_cell(cell.source,
                                              metadata=copy.deepcopy(dict(nodes[index].get("metadata", {}))))
            client.nb.cells = [node]
            try:
                await client.async_execute_cell(node, 0)
            except CellExecutionError as exc:
                error = next((o for o in node.outputs if o.get("output_type") == "error"), {})
                return CellFailure(cell.id, index, exc.ename, exc.evalue, clean_traceback(error.get("traceback", ())))
            except CellTimeoutError:
                self._dirty = True
                return CellFailure(cell.id, index, "TimeoutError",
                                   f"cell {index + 1} timed out after {self.timeout:g} s")
            except DeadKernelError:
                await anyio.lowlevel.checkpoint()  # nbclient reports our own cancellation (Ctrl+C) as a dead kernel
                self._dirty = True
                return CellFailure(cell.id, index, "DeadKernelError",
                                   f"the kernel died while running cell {index + 1}")
            finally:
                self.outputs[cell.id] = (list(node.outputs), node.get("execution_count"))
        return None

    async def close(self) -> None:
        """Shut the kernel down (also when cancelled)."""
        client, self._client = self._client, None
        if client is not None:
            started = time.monotonic()
            with anyio.CancelScope(shield=True):
                await self._shutdown(client)
            self.seconds += time.monotonic() - started

    @staticmethod
    async def _shutdown(client: Any) -> None:
        if client.kc is not None:
            client.kc.stop_channels()
            client.kc = None
        manager = client.km
        if manager is not None and manager.has_kernel:
            await manager.shutdown_kernel(now=True)
