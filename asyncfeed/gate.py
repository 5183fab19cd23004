"""The feed-level limit of fetch calls in flight, for ``concurrency=Adaptive(...)``.

An adaptive feed runs ``Adaptive.max`` fetch workers; each passes the :class:`Gate` around
every call, so at most ``limit`` calls run while the limit moves. Lowering it lets the calls
over it finish (none is cancelled) and starts no new one until the count is below it. A
plain ``concurrency=N`` has no gate: its N workers are the limit, at no cost per call.

:class:`GatedBackend` puts the gate in front of any worker backend's calls, so the fetch
workers (``fetch.py``) and the backends stay as they are.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import Any, Final, final

from .backend import KeyCall, Outcome, SeedCall, SizeHint, WorkerBackend

__all__ = ["COMPLETIONS", "Gate", "GatedBackend"]

#: Completions after which the controller is woken early (it also wakes every second).
COMPLETIONS: Final = 50


@final
class Gate:
    """At most ``limit`` holders at once; the limit may change at any time. Loop-only."""

    __slots__ = ("_waiters", "completions", "due", "inflight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self.completions = 0  # since the controller last looked
        self.due: Final = asyncio.Event()  # set after COMPLETIONS completions
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a slot. Cancelling the wait takes no slot."""
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # the slot came with the cancel
                self.release(completed=False)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, *, completed: bool = True) -> None:
        """Give a slot back (``completed``: after a call, counted for the controller)."""
        self.inflight -= 1
        if completed:
            self.completions += 1
            if self.completions >= COMPLETIONS:
                self.due.set()
        self._wake()

    def set_limit(self, limit: int) -> None:
        """Allow ``limit`` calls from now on (calls over it finish as they are)."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.inflight < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self.inflight += 1
                waiter.set_result(None)


@final
class _GatedSeedCall:
    __slots__ = ("_call", "_gate")

    def __init__(self, call: SeedCall, gate: Gate) -> None:
        self._call: Final = call
        self._gate: Final = gate

    async def _run(self) -> Outcome:
        gate = self._gate
        await gate.acquire()
        try:
            return await self._call()
        finally:
            gate.release()

    def __call__(self) -> Awaitable[Outcome]:
        return self._run()

    def leftovers(self) -> list[Outcome]:
        return self._call.leftovers()


@final
class GatedBackend:
    """A worker backend whose calls pass the gate first (see the module docstring)."""

    __slots__ = ("_backend", "_gate", "opens_fetcher")

    def __init__(self, backend: WorkerBackend, gate: Gate) -> None:
        self._backend: Final = backend
        self._gate: Final = gate
        self.opens_fetcher = backend.opens_fetcher

    async def start(self) -> None:
        await self._backend.start()

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        return _GatedSeedCall(self._backend.seed_call(worker_id, batch_size), self._gate)

    def key_call(self) -> KeyCall:
        call, gate = self._backend.key_call(), self._gate

        async def gated(key: Any) -> Outcome:
            await gate.acquire()
            try:
                return await call(key)
            finally:
                gate.release()

        return gated

    async def watch(self) -> None:
        await self._backend.watch()

    async def stop(self, deadline: float) -> None:
        await self._backend.stop(deadline)

    def host_stats(self) -> Mapping[str, Mapping[str, Any]]:
        return self._backend.host_stats()
