"""Worker processes ending: waiting on their sentinels from the loop, reaping, naming exits."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any, Final

__all__ = ["EXIT_WAIT", "describe_exit", "resolve", "wait_exits"]

EXIT_WAIT: Final = 2.0  # seconds to wait for a worker whose socket closed to exit


def resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
    """Set ``fut``'s result unless it is done (or None)."""
    if fut is not None and not fut.done():
        fut.set_result(value)


def describe_exit(code: int | None) -> str:
    """An exit code as a reader wants it: ``-9 (SIGKILL)``."""
    if code is None:
        return "unknown (still running)"
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


async def wait_exits(procs: Sequence[BaseProcess], timeout: float) -> list[BaseProcess]:
    """Wait until every process has exited (reaping it) or ``timeout``; return those alive."""
    loop = asyncio.get_running_loop()
    waits: dict[asyncio.Future[None], BaseProcess] = {}
    for proc in procs:
        if proc.exitcode is not None:
            continue
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(proc.sentinel, resolve, fut, None)
        waits[fut] = proc
    try:
        if waits:
            await asyncio.wait(waits, timeout=timeout)
    finally:
        for proc in waits.values():
            loop.remove_reader(proc.sentinel)
    alive = []
    for fut, proc in waits.items():
        if fut.done():
            proc.join(EXIT_WAIT)  # the sentinel is ready: this only reaps
        else:
            alive.append(proc)
    return alive
