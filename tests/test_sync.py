"""run_sync / iterate_sync from plain code and from inside a running event loop (as in ipykernel)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import anyio
import anyio.lowlevel
import pytest

from kimi_nb.errors import EngineError
from kimi_nb.sync import iterate_sync, run_sync


async def add(a: int, b: int = 0) -> int:
    await anyio.lowlevel.checkpoint()
    return a + b


async def fail() -> None:
    await anyio.lowlevel.checkpoint()
    raise EngineError("endpoint down")


async def count(n: int, *, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise EngineError(f"failed at {i}")
        await anyio.lowlevel.checkpoint()
        yield i


def test_run_sync_from_plain_code() -> None:
    assert run_sync(add, 2, b=3) == 5
    with pytest.raises(EngineError, match="endpoint down"):
        run_sync(fail)


def test_iterate_sync_from_plain_code() -> None:
    assert list(iterate_sync(count, 4)) == [0, 1, 2, 3]
    seen = []
    with pytest.raises(EngineError, match="failed at 2"):
        for item in iterate_sync(count, 5, fail_at=2):
            seen.append(item)
    assert seen == [0, 1]


@pytest.mark.anyio
async def test_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError):  # what run_sync exists to avoid
        anyio.run(add, 1)
    assert run_sync(add, 1, 1) == 2
    assert list(iterate_sync(count, 3)) == [0, 1, 2]


def test_stopping_early_cancels_the_generator_and_runs_its_cleanup() -> None:
    cleaned = []

    async def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
                await anyio.sleep(0.001)
        finally:
            cleaned.append(True)

    for item in iterate_sync(endless):
        if item == 3:
            break
    assert cleaned == [True]


def test_ctrl_c_cancels_the_coroutine_and_reraises() -> None:
    script = textwrap.dedent("""
        import os, signal, threading, anyio
        from kimi_nb.sync import run_sync, iterate_sync
        cleaned = []

        async def slow():
            try:
                await anyio.sleep(60)
            finally:
                cleaned.append("run")

        async def slow_items():
            try:
                yield 1
                await anyio.sleep(60)
            finally:
                cleaned.append("iterate")

        for call in (lambda: run_sync(slow), lambda: list(iterate_sync(slow_items))):
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                call()
            except KeyboardInterrupt:
                print("interrupted")
        print(cleaned)
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:3] == ["interrupted", "interrupted", "['run', 'iterate']"], result.stderr
