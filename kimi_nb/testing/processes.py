"""Stopping the child processes that tests and benchmarks start (Jupyter servers, scripted models)."""

from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0) -> None:
    """Ask ``process`` to exit (SIGTERM); kill it if it is still running after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
