"""Sending a feed's fetch calls to its Ray actors in batches, and their outcomes back.

The :class:`Dispatcher` collects the calls the feed's workers make together (in one turn of
the loop) and sends them as one actor call per actor, at most ``keys_per_call`` each, so
the cost of a Ray call (~0.4 ms of the feed's CPU) is shared by its keys. A keyed call goes
to the ready actor with the fewest calls in flight; a seed-style worker id always to the
same actor (another one once its actor is gone for good). Results are copied out of Ray's
object store on Ray's thread as they arrive, and each outcome goes to the worker that made
the call; one call's exception stays that call's. An error that means the actor is gone
(a dead actor or node, a lost result) goes to ``on_loss`` instead, which replaces the actor
(its calls go again) or fails them.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, final

from ..backend import KeyCall, Outcome, SeedCall, SizeHint
from .calls import Batch, Call, copy_out, unpack_error
from .slots import Slot, SlotState

__all__ = ["Dispatcher"]

LossHandler = Callable[[Slot, int, BaseException], None]


@final
class Dispatcher:
    """The calls of one feed's actors: waiting, in flight, and back.

    Args:
        slots: the feed's actors.
        keys_per_call: most calls one actor call carries.
        worker_ids: seed-style worker ids; ``worker_ids[i]`` goes to actor ``i % n``.
        on_loss: called on the loop with (slot, incarnation, error) when a batch's error
            means its actor is gone.
    """

    def __init__(
        self,
        slots: Sequence[Slot],
        *,
        keys_per_call: int,
        worker_ids: Sequence[int],
        on_loss: LossHandler,
    ) -> None:
        self._slots: Final = slots
        self._k: Final = keys_per_call
        self._on_loss: Final = on_loss
        self._owner = {wid: i % len(slots) for i, wid in enumerate(worker_ids)}
        self._queue: deque[Call] = deque()  # keyed calls waiting for an actor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_at: asyncio.Handle | None = None
        self._closed = False
        self.loss_types: tuple[type[BaseException], ...] = ()

    def bind(
        self, loop: asyncio.AbstractEventLoop, loss_types: tuple[type[BaseException], ...]
    ) -> None:
        """Start on ``loop``; errors of ``loss_types`` mean an actor is gone."""
        self._loop = loop
        self.loss_types = loss_types

    def close(self) -> None:
        """Send nothing more; forget the calls that wait (their workers are gone)."""
        self._closed = True
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        self._queue.clear()
        for slot in self._slots:
            slot.queue.clear()

    # -- the calls the feed's fetch workers make -----------------------------------------------

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        """``fn(worker_id, batch_size())`` on the actor that owns ``worker_id``."""
        return _SeedCall(self.submit, worker_id, batch_size)

    def key_call(self) -> KeyCall:
        """``fn(key)`` on the actor with the fewest calls in flight."""
        return self._key

    def _key(self, key: Any) -> Awaitable[Outcome]:
        return self.submit((key,), key, None)

    async def submit(self, args: tuple[Any, ...], key: Any, worker_id: int | None) -> Outcome:
        begin = time.perf_counter()
        loop = self._loop
        assert loop is not None
        call = Call(args, key, worker_id, loop.create_future())
        if worker_id is None:
            self._queue.append(call)
        else:
            self._slots[self._owner[worker_id]].queue.append(call)
        self.schedule_flush()
        returned, value = await call.future  # cancelled: the call is skipped or ignored
        return returned, value, time.perf_counter() - begin

    def schedule_flush(self) -> None:
        if self._flush_at is None and self._loop is not None and not self._closed:
            self._flush_at = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send what waits: one actor call per ``keys_per_call`` calls, per actor."""
        self._flush_at = None
        if self._closed:
            return
        k = self._k
        for slot in self._slots:
            if slot.state is SlotState.READY and slot.queue:
                calls = [c for c in slot.queue if c.waiting]
                slot.queue.clear()
                for i in range(0, len(calls), k):
                    self._send(slot, calls[i : i + k])
        queue = self._queue
        ready = [(s.load, s.index) for s in self._slots if s.state is SlotState.READY]
        if not queue or not ready:
            return  # keyed calls wait for an actor to be ready
        heapq.heapify(ready)
        groups: dict[int, list[Call]] = {}
        while queue:
            call = queue.popleft()
            if not call.waiting:
                continue
            load, index = heapq.heappop(ready)
            groups.setdefault(index, []).append(call)
            heapq.heappush(ready, (load + 1, index))
        for index, calls in groups.items():
            for i in range(0, len(calls), k):
                self._send(self._slots[index], calls[i : i + k])

    def _send(self, slot: Slot, calls: list[Call]) -> None:
        try:
            ref = slot.handle.run.remote([c.args for c in calls])
        except Exception as exc:  # an argument Ray cannot serialize: find which
            if len(calls) > 1:
                for call in calls:
                    self._send(slot, [call])
            else:
                calls[0].resolve(False, exc)
            return
        batch = Batch(slot.index, slot.incarnation, calls)
        batch.ref = ref
        slot.batches[batch] = None
        slot.load += len(calls)
        for call in calls:
            call.sent += 1
        self.when_done(ref, self._settle, batch, copy=True)

    def when_done(self, ref: Any, callback: Callable[..., None], *args: Any, copy: bool) -> None:
        """Call ``callback(*args, (ok, value))`` on the loop once ``ref`` is ready.

        The value is taken (and, for batches, copied out of the object store) on Ray's
        thread, so the loop only hands outcomes to their workers.
        """
        loop = self._loop
        assert loop is not None
        handler: Any = callback

        def done(cf: Any) -> None:
            # Never raise here: a traceback would hold this frame, the future and the ref.
            result: tuple[bool, Any]
            exc = cf.exception() if not cf.cancelled() else RuntimeError("cancelled")
            if exc is not None:
                result = (False, exc)
            elif copy:
                outcomes, hosts = cf.result()
                try:
                    result = (True, (copy_out(outcomes), hosts))
                except Exception as error:
                    result = (False, error.with_traceback(None))
                del outcomes
            else:
                result = (True, cf.result())
            del cf
            try:
                loop.call_soon_threadsafe(handler, *args, result)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        ref.future().add_done_callback(done)

    def _settle(self, batch: Batch, result: tuple[bool, Any]) -> None:
        """On the loop: a batch's outcomes to their calls, or its actor's loss."""
        if batch.settled:
            return
        slot = self._slots[batch.slot]
        ok, payload = result
        if not ok and isinstance(payload, self.loss_types):
            self._on_loss(slot, batch.incarnation, payload)
            return
        batch.settled = True
        batch.ref = None
        slot.batches.pop(batch, None)
        slot.load -= len(batch.calls)
        if not ok:
            for call in batch.calls:
                call.resolve(False, payload)
            return
        outcomes, hosts = payload
        if hosts is not None:
            slot.hosts = hosts
        for call, (returned, value) in zip(batch.calls, outcomes, strict=True):
            call.resolve(returned, value if returned else unpack_error(value))

    def future_of(self, ref: Any) -> asyncio.Future[tuple[bool, Any]]:
        """An asyncio future resolved with ``(ok, value)`` once ``ref`` is ready."""
        assert self._loop is not None
        fut: asyncio.Future[tuple[bool, Any]] = self._loop.create_future()

        def resolve(result: tuple[bool, Any]) -> None:
            if not fut.done():
                fut.set_result(result)

        self.when_done(ref, resolve, copy=False)
        return fut

    def requeue(self, slot: Slot, calls: list[Call]) -> None:
        """Send ``calls`` again, first: keyed ones to any actor, seed-style ones to ``slot``."""
        self._queue.extendleft(reversed([c for c in calls if c.worker_id is None]))
        slot.queue.extendleft(reversed([c for c in calls if c.worker_id is not None]))
        self.schedule_flush()

    def rehome(self, dead: Slot) -> None:
        """Seed-style worker ids of a dead actor move to the live ones, with their calls."""
        live = [s for s in self._slots if s.state is not SlotState.DEAD]
        if not live:
            return
        moved = 0
        for wid, owner in self._owner.items():
            if owner == dead.index:
                self._owner[wid] = live[moved % len(live)].index
                moved += 1
        for call in dead.queue:
            if call.waiting and call.worker_id is not None:
                self._slots[self._owner[call.worker_id]].queue.append(call)
        dead.queue.clear()
        self.schedule_flush()


@final
class _SeedCall:
    """The repeated call of one seed-style worker, on the actor that owns its id."""

    __slots__ = ("_batch_size", "_submit", "_worker_id")

    def __init__(
        self,
        submit: Callable[[tuple[Any, ...], Any, int | None], Awaitable[Outcome]],
        worker_id: int,
        batch_size: SizeHint,
    ) -> None:
        self._submit: Final = submit
        self._worker_id: Final = worker_id
        self._batch_size: Final = batch_size

    def __call__(self) -> Awaitable[Outcome]:
        args = (self._worker_id, self._batch_size())  # the size now: it may change
        return self._submit(args, None, self._worker_id)

    def leftovers(self) -> list[Outcome]:
        return []
