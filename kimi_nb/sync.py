"""Sync twins of async code for callers that are not async (IPython magics, the CLI), safe inside a running loop.

Each call runs its coroutine on a fresh anyio event loop in a worker thread (an anyio blocking portal), so it
works the same with no loop and inside ipykernel's running asyncio loop, where ``anyio.run`` would fail.
Exceptions propagate unchanged; Ctrl+C (KeyboardInterrupt in the calling thread) cancels the coroutine, waits
for its cleanup, then re-raises.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from anyio.from_thread import start_blocking_portal

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")


def run_sync(async_fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await async_fn(*args, **kwargs)`` from sync code and return its result."""
    with start_blocking_portal() as portal:
        future = portal.start_task_soon(functools.partial(async_fn, *args, **kwargs))
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task; leaving the portal waits for its cleanup
            raise


def iterate_sync(async_gen_fn: Callable[..., AsyncIterator[T]], *args: Any, **kwargs: Any) -> Iterator[T]:
    """Yield the items of ``async_gen_fn(*args, **kwargs)`` to sync code as they are produced.

    Stopping early (``break``, closing the iterator, Ctrl+C) cancels the async generator and runs its cleanup.
    """
    items: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    async def pump() -> None:
        generator = async_gen_fn(*args, **kwargs)
        try:
            async for item in generator:
                items.put((True, item))
        finally:
            await generator.aclose()  # type: ignore[attr-defined]

    with start_blocking_portal() as portal:
        future = portal.start_task_soon(pump)
        future.add_done_callback(lambda _: items.put((False, None)))
        try:
            while True:
                more, item = items.get()
                if not more:
                    break
                yield item
            future.result()  # the generator's exception, if any
        finally:
            future.cancel()  # no-op when finished; leaving the portal waits for the generator's cleanup
