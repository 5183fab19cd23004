"""``DecodeLoad``: what a fetcher's decode pool is doing, counted cheaply and thread-safely.

:meth:`Loader.load() <asyncfeed.fetchers.loader.Loader.load>` reports it; the feed reads it to
tell a consumer waiting on decoding (``decode``) from one waiting on the network.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar, final

__all__ = ["DecodeLoad"]

T = TypeVar("T")


@final
class DecodeLoad:
    """Thread-safe counts of the decode pool's work: queued, running, total queue wait."""

    __slots__ = ("_lock", "queued", "running", "wait_s")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self.queued = 0
        self.running = 0
        self.wait_s = 0.0

    def wrap(self, fn: Callable[..., T], args: tuple[Any, ...]) -> Callable[[], T]:
        """``fn(*args)`` counted as queued now, running once a thread takes it."""
        submitted = time.perf_counter()
        with self._lock:
            self.queued += 1

        def run() -> T:
            started = time.perf_counter()
            with self._lock:
                self.queued -= 1
                self.running += 1
                self.wait_s += started - submitted
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1

        return run

    def dropped(self, future: concurrent.futures.Future[Any]) -> None:
        """Done callback: a call cancelled before it ran leaves the queue."""
        if future.cancelled():
            with self._lock:
                self.queued -= 1

    def snapshot(self) -> tuple[int, int, float]:
        with self._lock:
            return self.queued, self.running, self.wait_s
