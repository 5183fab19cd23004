"""A blocking call repeated on one pool thread, its results taken by a coroutine.

Handing each call to a thread and waking the loop for each result costs tens of
microseconds, more than a small chunk is worth; a :class:`Pump` wakes the loop only when its
taker waits, so a burst of results costs one wake-up. Pumps run on the threads of
``bridge.DaemonThreadPool`` (the only maker of threads), made with its ``pump()`` method.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar, final

__all__ = ["Outcome", "Pump"]

T = TypeVar("T")

# What one call of a pump's function gave: (returned, its value or exception, seconds).
Outcome = tuple[bool, Any, float]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@final
class Pump(Generic[T]):
    """A blocking ``call()`` repeated on one pool thread, at most ``ahead`` results ahead of
    the coroutine that takes them with :meth:`get`.

    Handing each call to a thread and waking the loop for each result costs tens of
    microseconds, more than a small chunk is worth; a pump wakes the loop only when its
    taker waits, so a burst of results costs one wake-up. Create with
    :meth:`DaemonThreadPool.pump`, on the loop that takes the results.
    """

    __slots__ = ("_call", "_items", "_lock", "_loop", "_on_late", "_room", "_stopped", "_waiter")

    def __init__(
        self, call: Callable[[], T], *, ahead: int, on_late: Callable[[Outcome], object]
    ) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self._call: Final = call
        self._on_late: Final = on_late
        self._loop: Final = asyncio.get_running_loop()
        self._items: deque[Outcome] = deque()
        self._lock: Final = threading.Lock()
        self._room: Final = threading.Semaphore(ahead)
        self._waiter: asyncio.Future[None] | None = None
        self._stopped: Final = threading.Event()

    def _run(self, busy: set[threading.Thread]) -> None:
        """The pool thread's loop: call, hand over, until stopped."""
        call, items, lock, room = self._call, self._items, self._lock, self._room
        perf = time.perf_counter
        me = threading.current_thread()
        while True:
            room.acquire()
            if self._stopped.is_set():
                return
            busy.add(me)
            start = perf()
            try:
                outcome: Outcome = (True, call(), perf() - start)
            except BaseException as exc:  # handed to the taker, who decides
                outcome = (False, exc, perf() - start)
            finally:
                busy.discard(me)
            with lock:
                late = self._stopped.is_set()
                if not late:
                    items.append(outcome)
                    waiter, self._waiter = self._waiter, None
            if late:  # stopped during the call: nobody will take it
                self._on_late(outcome)
                return
            del outcome  # not held while the next call runs
            if waiter is not None:
                try:
                    self._loop.call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # the loop closed: nobody is waiting
                    return
                del waiter

    async def get(self) -> Outcome:
        """The next outcome, waiting while the thread is still in its call."""
        items = self._items
        while True:
            try:
                outcome = items.popleft()
            except IndexError:
                with self._lock:
                    if items:  # handed over meanwhile
                        continue
                    waiter = self._waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
                continue
            self._room.release()
            return outcome

    def stop(self) -> list[Outcome]:
        """Stop the thread after its current call; return the outcomes never taken.

        An outcome of a call still running goes to ``on_late`` when it returns.
        """
        with self._lock:
            self._stopped.set()
            left = list(self._items)
            self._items.clear()
        self._room.release()  # a thread waiting for room sees the stop
        return left
