"""Bounded, closable asyncio channels, and the chunk queues shared per (loop, source).

:class:`Channel` is a bounded FIFO for one event loop, like ``asyncio.Queue`` plus a
``close()`` that gives every parked waiter a defined outcome (trio's memory channels):
putters raise :class:`ChannelClosed`, getters drain what is left and then raise it too.
Python 3.11's ``asyncio.Queue`` has no such close, so the feed builds on this instead.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Final, Generic, TypeVar, final

import numpy as np

from .chunks import ChunkSchema
from .errors import AsyncFeedError, ConfigError
from .stats import Ledger

T = TypeVar("T")

__all__ = ["Channel", "ChannelClosed", "Chunk", "SourceQueue", "attach_source", "detach_source"]


class ChannelClosed(AsyncFeedError):
    """Internal: the channel is closed (and, for getters, drained)."""


@final
class Channel(Generic[T]):
    """A bounded FIFO between coroutines of one loop; ``close()`` wakes every waiter.

    Putters are served in order: a put never overtakes one parked before it, and a slot
    freed by a get is kept for the putter it wakes (else a producer that never has to wait
    could hold a parked one back for good, and its key with it).
    """

    __slots__ = ("_closed", "_getters", "_handed", "_items", "_putters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize: Final = maxsize
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._handed = 0  # slots kept for woken putters that have not run yet
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_getters(self) -> int:
        """Coroutines parked in :meth:`get`, waiting for an item."""
        return len(self._getters)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, item: T) -> bool:
        """Append ``item`` if there is room and no putter waits; return False otherwise.

        Raises:
            ChannelClosed: the channel is closed.
        """
        if self._closed:
            raise ChannelClosed("channel closed")
        if self._putters or len(self._items) + self._handed >= self.maxsize:
            return False
        self._items.append(item)
        _wake_one(self._getters)
        return True

    async def put(self, item: T) -> None:
        """Append ``item``, waiting (in turn) while the channel is full.

        Raises:
            ChannelClosed: the channel is closed, before or while waiting.
        """
        if self.put_nowait(item):
            return
        while True:
            await self._park_putter()
            self._handed -= 1
            if self._closed:
                raise ChannelClosed("channel closed")
            if len(self._items) < self.maxsize:
                self._items.append(item)
                _wake_one(self._getters)
                return

    async def _park_putter(self) -> None:
        """Wait in turn for a slot; on cancel, pass a slot kept for us to the next putter."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._putters.append(fut)
        try:
            await fut
        except BaseException:
            fut.cancel()
            try:
                self._putters.remove(fut)
            except ValueError:
                pass
            if fut.done() and not fut.cancelled():  # woken, but leaving: hand the slot on
                self._handed -= 1
                self._wake_putter()
            raise

    def _wake_putter(self) -> None:
        """Wake the oldest parked putter, keeping a slot for it."""
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._handed += 1
                return

    def put_front(self, item: T) -> None:
        """Return an item taken by a getter that could not hand it on; ignores the bound."""
        self._items.appendleft(item)
        _wake_one(self._getters)

    def get_nowait(self) -> T:
        """Pop the oldest item.

        Raises:
            asyncio.QueueEmpty: nothing is buffered and the channel is open.
            ChannelClosed: nothing is buffered and the channel is closed.
        """
        if self._items:
            item = self._items.popleft()
            if self._putters and len(self._items) + self._handed < self.maxsize:
                self._wake_putter()
            return item
        if self._closed:
            raise ChannelClosed("channel closed and drained")
        raise asyncio.QueueEmpty

    async def get(self) -> T:
        """Pop the oldest item, waiting while the channel is empty and open.

        Raises:
            ChannelClosed: the channel is closed and drained.
        """
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                await _park(self._getters)

    def drain(self) -> list[T]:
        """Remove and return every buffered item, waking every parked putter."""
        items = list(self._items)
        self._items.clear()
        while self._putters:
            self._wake_putter()
        return items

    def close(self) -> None:
        """Close for good: putters raise, getters get what is left, then raise. Idempotent."""
        self._closed = True
        while self._putters:
            self._wake_putter()
        for fut in self._getters:
            if not fut.done():
                fut.set_result(None)
        self._getters.clear()


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return


async def _park(waiters: deque[asyncio.Future[None]]) -> None:
    """Wait on a new future in ``waiters`` (getters); on cancel, pass a wake-up we consumed
    along."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        await fut
    except BaseException:
        fut.cancel()
        try:
            waiters.remove(fut)
        except ValueError:
            pass
        if fut.done() and not fut.cancelled():
            _wake_one(waiters)
        raise


# A validated chunk on its way to a rebatcher: (arrays in blob order, rows, origin).
Chunk = tuple[tuple[np.ndarray, ...], int, object]


@final
class SourceQueue:
    """The chunk channel, chunk schema and row ledger that the feeds of one source share."""

    __slots__ = ("blobs", "channel", "ledger", "name", "schema", "users")

    def __init__(self, name: str, blobs: Sequence[str], maxsize: int) -> None:
        self.name: Final = name
        self.blobs: Final = tuple(blobs)
        self.channel: Final[Channel[Chunk]] = Channel(maxsize)
        self.schema: Final = ChunkSchema(blobs)
        self.ledger: Final = Ledger()
        self.users = 0


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SourceQueue]] = (
    weakref.WeakKeyDictionary()
)


def attach_source(
    source: str, blobs: Sequence[str], maxsize: int, *, shared: bool = True
) -> SourceQueue:
    """Join (or create) the chunk queue of ``source`` on the running loop.

    With ``shared=False`` the queue is private to the caller (keyed sources, whose end of
    data belongs to one feed).

    Raises:
        ConfigError: a feed of the same source on this loop uses other blobs or queue size.
    """
    if not shared:
        sq = SourceQueue(source, blobs, maxsize)
        sq.users = 1
        return sq
    queues = _shared.setdefault(asyncio.get_running_loop(), {})
    existing = queues.get(source)
    if existing is None:
        sq = queues[source] = SourceQueue(source, blobs, maxsize)
    else:
        sq = existing
    if sq.blobs != tuple(blobs) or sq.channel.maxsize != maxsize:
        raise ConfigError(
            f"source {source!r} is already fed with blobs {list(sq.blobs)} and "
            f"max_buffered_chunks={sq.channel.maxsize}; got blobs {list(blobs)} and "
            f"max_buffered_chunks={maxsize}"
        )
    sq.users += 1
    return sq


def detach_source(sq: SourceQueue) -> bool:
    """Leave a source queue; return True when the caller was its last user."""
    sq.users -= 1
    if sq.users > 0:
        return False
    for queues in list(_shared.values()):
        if queues.get(sq.name) is sq:
            del queues[sq.name]
    return True
