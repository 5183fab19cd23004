"""This rank's keys, epoch after epoch, taken by the feed's key workers.

Keys from a sync iterable are taken straight from it by the workers (no task, no channel:
a key costs a generator step); keys from an async iterable come through one dispatcher task
and a bounded channel. Between epochs there is a barrier: the next epoch's keys are dealt
only once every key of the last one is settled (its chunk queued, or nothing to queue), then
an epoch-end marker follows that epoch's chunks into the chunk queue, so the rebatcher ends
the epoch with its partial batch and batches never mix epochs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final, final

from .checkpoint import Tracker
from .epochs import Assigned, Assigner, assigned_async, assigned_sync
from .errors import FetchError
from .keys import KeySpec
from .queues import Channel, ChannelClosed, Chunk

__all__ = ["END", "WAIT", "EpochEnd", "KeyItem", "KeySource"]

#: What a worker takes: (sequence number, key, (epoch, index, position, rows to skip)).
KeyItem = tuple[int, Any, tuple[int, int, int, int]]
WAIT: Final = object()  # take_now(): nothing without waiting; await take()
END: Final = object()  # no more keys, ever


@final
class EpochEnd:
    """The chunk-queue marker that follows an epoch's last chunk."""

    __slots__ = ("epoch",)

    def __init__(self, epoch: int) -> None:
        self.epoch: Final = epoch

    def __repr__(self) -> str:
        return f"EpochEnd({self.epoch})"


@final
class KeySource:
    """Deals this rank's keys to the key workers (see the module docstring).

    Args:
        spec: the keys and how they are walked.
        tracker: learns each epoch's share once all its keys were seen.
        chunks: the chunk queue, for the epoch-end markers.
        buffer: keys the dispatcher of async keys may hold ahead of the workers.
    """

    def __init__(self, spec: KeySpec, tracker: Tracker, chunks: Channel[Chunk], buffer: int):
        self._spec: Final = spec
        self._tracker: Final = tracker
        self._chunks: Final = chunks
        self._epoch = tracker.epoch
        self._seq = 0
        self._pending: Counter[int] = Counter()  # epoch -> keys dealt and not settled
        self._settled: asyncio.Event | None = None
        self._crossing: asyncio.Future[None] | None = None
        self._assigner = Assigner(tracker.plan(self._epoch))
        self._sync: Iterator[Assigned] | None = None
        self._channel: Channel[KeyItem] | None = None
        self._done = tracker.finished
        if not self._done:
            self._sync = assigned_sync(spec, self._epoch, self._assigner)
            if self._sync is None:
                self._channel = Channel(buffer)

    @property
    def ordered(self) -> bool:
        """Deliver rows in key order."""
        return self._spec.ordered

    @property
    def channel(self) -> Channel[KeyItem] | None:
        """The channel of dealt keys (async keys only; for the queue statistics)."""
        return self._channel

    def take_now(self) -> KeyItem | object:
        """The next key without waiting, or ``WAIT`` / ``END``."""
        it = self._sync
        if it is None:
            if self._channel is None:
                return END
            try:
                return self._channel.get_nowait()
            except asyncio.QueueEmpty:
                return WAIT
            except ChannelClosed:
                return END
        try:
            position, index, key, skip = next(it)
        except StopIteration:
            return WAIT
        except Exception as exc:
            raise FetchError(f"iterating the keys failed: {type(exc).__name__}: {exc}") from exc
        seq = self._seq
        self._seq = seq + 1
        epoch = self._epoch
        self._pending[epoch] += 1
        return seq, key, (epoch, index, position, skip)

    async def take(self) -> KeyItem | object:
        """The next key, or ``END``; crosses an epoch's barrier when it comes to one."""
        while True:
            if self._channel is not None:
                try:
                    return await self._channel.get()
                except ChannelClosed:
                    return END
            item = self.take_now()
            if item is not WAIT:
                return item
            if self._crossing is None:
                self._crossing = asyncio.get_running_loop().create_future()
                try:
                    await self._cross()
                finally:
                    crossing, self._crossing = self._crossing, None
                    crossing.set_result(None)
            else:
                await asyncio.shield(self._crossing)
            if self._done:
                return END

    def settled(self, epoch: int) -> None:
        """One key of ``epoch`` is settled: its chunk was queued, or there was nothing."""
        pending = self._pending
        pending[epoch] -= 1
        if not pending[epoch] and self._settled is not None:
            self._settled.set()

    async def _end_epoch(self, epoch: int) -> None:
        """After every key of ``epoch`` was dealt: wait for them, then mark the epoch's end."""
        self._tracker.dealt(epoch, self._assigner.size)
        while self._pending[epoch]:
            self._settled = asyncio.Event()
            await self._settled.wait()
        self._settled = None
        del self._pending[epoch]
        await self._chunks.put(((), 0, EpochEnd(epoch)))

    def _next_epoch(self) -> bool:
        """Move to the next epoch; False when there is none."""
        epochs = self._spec.epochs
        self._epoch += 1
        if epochs is not None and self._epoch >= epochs:
            self._done = True
            return False
        self._assigner = Assigner(self._tracker.plan(self._epoch))
        return True

    async def _cross(self) -> None:
        """A sync epoch ran out: the barrier, then the next epoch's keys."""
        await self._end_epoch(self._epoch)
        if self._next_epoch():
            self._sync = assigned_sync(self._spec, self._epoch, self._assigner)
            if self._sync is None:  # the keys of this epoch are async
                raise FetchError("the keys turned async between epochs; give one kind")
        else:
            self._sync = None

    async def dispatch(self) -> None:
        """The dispatcher task of async keys: deal them into the channel, epoch by epoch.

        Raises:
            FetchError: iterating the keys failed; the original is chained.
        """
        channel = self._channel
        assert channel is not None
        try:
            while not self._done:
                epoch = self._epoch
                try:
                    async for position, index, key, skip in assigned_async(
                        self._spec, epoch, self._assigner
                    ):
                        seq = self._seq
                        self._seq = seq + 1
                        self._pending[epoch] += 1
                        await channel.put((seq, key, (epoch, index, position, skip)))
                except Exception as exc:
                    raise FetchError(
                        f"iterating the keys failed: {type(exc).__name__}: {exc}"
                    ) from exc
                await self._end_epoch(epoch)
                self._next_epoch()
        finally:
            channel.close()
