"""What runs in each Ray actor of ``RayActors``: one event loop serving batched fetch calls.

:class:`FetchActor` is made a Ray actor by the feed's backend (``ray.remote(FetchActor)``);
Ray imports this module in the actor's process, so it must not import Ray at module level
(``import asyncfeed`` never does). An actor with ``async def`` methods runs them on its own
event loop: ``run(calls)`` awaits every call of the batch at once (``async def`` fetchers on
that loop, plain functions on a pool of daemon threads), at most ``threads`` at a time,
and returns one outcome per call; one call's exception stays that call's. The actor's
process has its own event loop and creates its tasks itself, as a worker process does.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import pickle
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final, final

import numpy as np

from ..bridge import DaemonThreadPool
from ..procs.options import WorkerSpec
from ..protocols import is_async_callable

__all__ = ["FetchActor", "RemoteOutcome", "pack_error"]

log = logging.getLogger("asyncfeed.ray")

#: One call's outcome as it travels back: (returned, value or packed error, seconds).
RemoteOutcome = tuple[bool, Any, float]

STATS_INTERVAL: Final = 0.5  # seconds between host stats riding on call replies
CLOSE_TIMEOUT: Final = 1.0


def pack_error(exc: BaseException) -> tuple[bytes | None, str]:
    """An exception as (pickle or None, traceback text), rebuilt in the feed's process."""
    text = "".join(traceback.format_exception(exc))
    try:
        return pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL), text
    except Exception:
        return None, text


def _is_chunk(value: object) -> bool:
    """A list, tuple or mapping of plain ndarrays: sent as it is, zero-copy."""
    values: Any
    if isinstance(value, Mapping):
        values = list(value.values())
    elif isinstance(value, list | tuple):
        values = value
    else:
        return False
    return all(type(v) is np.ndarray and not v.dtype.hasobject for v in values)


@final
class FetchActor:
    """The actor side of one ``RayActors`` slot.

    Args:
        index: the actor's index in its feed (``worker_init(index)``).
        spec: the fetcher, ``worker_init``, the threads and the source name.
    """

    def __init__(self, index: int, spec: WorkerSpec) -> None:
        self.index: Final = index
        self.spec: Final = spec
        self._async: Final = is_async_callable(spec.fn)
        self._pool: DaemonThreadPool | None = None
        self._limit: asyncio.Semaphore | None = None
        self._never: asyncio.Event | None = None
        self._host_stats = getattr(spec.fn, "host_stats", None)
        self._stats_at = 0.0

    async def start(self) -> dict[str, Any]:
        """Run ``worker_init(index)``; return where this actor runs (or the init's error)."""
        ray: Any = importlib.import_module("ray")  # in the actor's process, which Ray runs

        self._limit = asyncio.Semaphore(self.spec.threads)
        self._never = asyncio.Event()
        if not self._async:
            name = f"asyncfeed-{self.spec.source}-actor{self.index}-fetch"
            self._pool = DaemonThreadPool(self.spec.threads, name)
        ctx = ray.get_runtime_context()
        where = {
            "node_id": ctx.get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }
        init = self.spec.worker_init
        if init is not None:
            try:
                result = init(self.index)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                where["error"] = pack_error(exc)
        return where

    async def run(
        self, calls: list[tuple[Any, ...]]
    ) -> tuple[list[RemoteOutcome], dict[str, Any] | None]:
        """Every call of a batch at once; one outcome per call, in order, and host stats
        when they are due."""
        outcomes = await asyncio.gather(*(self._one(args) for args in calls))
        return outcomes, self._stats_due()

    async def _one(self, args: tuple[Any, ...]) -> RemoteOutcome:
        assert self._limit is not None
        async with self._limit:
            begin = time.perf_counter()
            try:
                if self._async:
                    value = await self.spec.fn(*args)
                else:
                    assert self._pool is not None
                    value = await asyncio.wrap_future(self._pool.submit(self.spec.fn, *args))
                if value is not None and not _is_chunk(value):
                    pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)  # fails here, per call
            except Exception as exc:
                return False, pack_error(exc), time.perf_counter() - begin
            return True, value, time.perf_counter() - begin

    async def lifeline(self) -> None:
        """Never return: the feed learns of the actor's end (a kill, a lost node) when this
        call fails."""
        assert self._never is not None
        await self._never.wait()

    async def close(self) -> dict[str, Any] | None:
        """Close the fetcher's resources (``aclose()``); return the last host stats."""
        hosts = self._stats_due(force=True)
        aclose = getattr(self.spec.fn, "aclose", None)
        if callable(aclose):
            try:
                await asyncio.wait_for(aclose(), CLOSE_TIMEOUT)
            except Exception:
                log.warning("closing the fetcher in Ray actor %d failed", self.index)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        return hosts

    def _stats_due(self, force: bool = False) -> dict[str, Any] | None:
        get = self._host_stats
        now = time.monotonic()
        if get is None or (not force and now - self._stats_at < STATS_INTERVAL):
            return None
        self._stats_at = now
        try:
            return {str(h): dict(v) for h, v in dict(get()).items()}
        except Exception:
            log.warning("host_stats() of the fetcher failed in Ray actor %d", self.index)
            return None
