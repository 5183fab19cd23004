"""A bounded, closable FIFO between threads, readable from asyncio without blocking the loop.

The building block of the sinks. Writers block while the queue is full and open; readers block
while it is empty and open; ``close()`` is permanent and wakes every blocked reader and writer,
in every thread and on every event loop. Items written before ``close()`` stay readable, in
order. Nothing here polls: threads park on conditions, coroutines on futures that a writer
resolves with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, TypeVar, final

from ..attribution import WaitWatch
from ..errors import FeedTimeoutError

__all__ = ["ClosableQueue"]

T = TypeVar("T")

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


@final
class ClosableQueue(Generic[T]):
    """Bounded FIFO for threads and coroutines; ``close()`` gives every waiter an outcome.

    Args:
        capacity: the most items held; writers block beyond it.
        weigh: optional ``item -> bytes`` for the byte counters.

    A writer may first :meth:`reserve` a place, prepare its item, then :meth:`commit` it;
    reserved places count against ``capacity`` (the torch sink bounds device memory this way).
    """

    __slots__ = (
        "_aget",
        "_closed",
        "_items",
        "_lock",
        "_not_empty",
        "_not_full",
        "_reserved",
        "_taken",
        "_watch",
        "_weigh",
        "bytes_in",
        "bytes_out",
        "capacity",
        "gets",
        "puts",
    )

    def __init__(self, capacity: int, weigh: Callable[[T], int] | None = None) -> None:
        self.capacity: Final = capacity
        self._weigh: Final = weigh
        self._items: deque[T] = deque()
        self._lock: Final = threading.Lock()
        self._not_full: Final = threading.Condition(self._lock)
        self._not_empty: Final = threading.Condition(self._lock)
        self._aget: deque[_Waiter] = deque()
        self._reserved = 0
        self._closed = False
        self._watch: WaitWatch | None = None
        self._taken = False
        self.puts = 0
        self.gets = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def __len__(self) -> int:
        return len(self._items)

    def counters(self) -> tuple[int, int, int, int, int]:
        """(size, puts, gets, bytes in, bytes out), consistent with each other."""
        with self._lock:
            return len(self._items), self.puts, self.gets, self.bytes_in, self.bytes_out

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing ------------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Wait for a free place and hold it; False (nothing held) once the queue is closed."""
        with self._lock:
            while not self._closed and len(self._items) + self._reserved >= self.capacity:
                self._not_full.wait()
            if self._closed:
                return False
            self._reserved += 1
            return True

    def try_reserve(self) -> bool:
        """Hold a free place if there is one now; False when full or closed."""
        with self._lock:
            if self._closed or len(self._items) + self._reserved >= self.capacity:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a place held by :meth:`reserve` without writing to it."""
        with self._lock:
            self._reserved -= 1
            self._not_full.notify()

    def commit(self, item: T) -> bool:
        """Write ``item`` into a held place; False (item dropped) if the queue closed meanwhile."""
        with self._lock:
            self._reserved -= 1
            if self._closed:
                return False
            self._items.append(item)
            self.puts += 1
            if self._weigh is not None:
                self.bytes_in += self._weigh(item)
            self._not_empty.notify()
            self._wake_one_async()
            return True

    def put(self, item: T) -> bool:
        """Append ``item``, blocking while full and open; False once the queue is closed."""
        return self.reserve() and self.commit(item)

    def try_put(self, item: T) -> bool:
        """Append ``item`` if there is room now; False when full or closed."""
        return self.try_reserve() and self.commit(item)

    # -- reading ------------------------------------------------------------------------------

    def watch(self, watch: WaitWatch | None, *, taken: bool = True) -> None:
        """Tell ``watch`` of every read that has to wait (a feed attributes the waits) and,
        with ``taken``, of every item read."""
        self._watch = watch
        self._taken = taken

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, blocking while empty and open; None once closed and drained.

        Raises:
            FeedTimeoutError: nothing arrived within ``timeout`` seconds and the queue is open.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = self._watch
        if watch is not None:
            watch.asked()
        waited: tuple[str, float] | None = None
        try:
            with self._lock:
                while not self._items:
                    if self._closed:
                        return None
                    if waited is None and watch is not None:
                        waited = watch.cause(), time.perf_counter()
                    if deadline is None:
                        self._not_empty.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise FeedTimeoutError(f"nothing to read within {timeout} s")
                    self._not_empty.wait(remaining)
                return self._pop()
        finally:
            if waited is not None and watch is not None:
                watch.waited(waited[0], time.perf_counter() - waited[1])

    async def aget(self) -> T | None:
        """The oldest item, waiting on the running loop without blocking it.

        Returns None once closed and drained. Cancelling the wait loses nothing: an item is
        only taken by the coroutine that returns it.
        """
        loop = asyncio.get_running_loop()
        watch = self._watch
        if watch is not None:
            watch.asked()
        waited: tuple[str, float] | None = None
        try:
            while True:
                with self._lock:
                    if self._items:
                        return self._pop()
                    if self._closed:
                        return None
                    if waited is None and watch is not None:
                        waited = watch.cause(), time.perf_counter()
                    waiter: _Waiter = (loop, loop.create_future())
                    self._aget.append(waiter)
                try:
                    await waiter[1]
                except BaseException:
                    with self._lock:
                        try:
                            self._aget.remove(waiter)
                        except ValueError:  # already woken: pass the wake-up on
                            if self._items:
                                self._wake_one_async()
                    raise
        finally:
            if waited is not None and watch is not None:
                watch.waited(waited[0], time.perf_counter() - waited[1])

    def _pop(self) -> T:
        item = self._items.popleft()
        self.gets += 1
        if self._taken and self._watch is not None:
            self._watch.taken()
        if self._weigh is not None:
            self.bytes_out += self._weigh(item)
        self._not_full.notify()
        return item

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close for good; wake every blocked reader and writer. Idempotent, never blocks long."""
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()
            while self._aget:
                self._wake_one_async()

    def _wake_one_async(self) -> None:
        """Wake the oldest coroutine waiting in :meth:`aget` (lock held)."""
        while self._aget:
            loop, fut = self._aget.popleft()
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:  # its loop is closed: nobody is waiting there any more
                continue
            return


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
