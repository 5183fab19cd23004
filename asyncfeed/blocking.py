"""The blocking face of :class:`~asyncfeed.Feed`, for synchronous programs.

``start()`` runs the feed on the process-wide private loop thread (``bridge.LoopThread``);
``get()`` and ``for batch in feed`` take batches from any other thread; ``stop()`` ends it.
Batches cross threads through a ``concurrent.futures.Future``: a getter that times out
cancels it, and a batch that lost that race goes back to the head of the batch channel, so
nothing is lost. Tasks are still created by ``feed.py`` alone (``Feed._spawn``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from .bridge import LoopThread, acquire_loop_thread, release_loop_thread, stop_at_exit
from .errors import FeedExhausted, FeedStateError, FeedTimeoutError
from .queues import Channel, ChannelClosed
from .rebatch import Batch
from .state import FeedState
from .stats import DropCause

__all__ = ["BlockingFeed"]


class BlockingFeed:
    """Mixin: the synchronous lifecycle and consumption of a feed."""

    _lock: threading.Lock
    _state: FeedState
    _loop: asyncio.AbstractEventLoop | None
    _portal: LoopThread | None
    _stopping: concurrent.futures.Future[None] | None
    _batches: Channel[Batch]
    _getters: set[concurrent.futures.Future[Batch]]

    if TYPE_CHECKING:

        @property
        def source(self) -> str: ...

        def _open(self) -> None: ...

        async def aclose(self, *, timeout: float = 5.0) -> None: ...

        def _raise_unseen(self) -> None: ...

        def _raise_end(self) -> Any: ...

        def _delivered(self, batch: Batch) -> None: ...

        def _check_no_sink(self) -> None: ...

        def _close_sink(self, cause: DropCause) -> None: ...

        def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]: ...

    def start(self, *, timeout: float = 30.0) -> None:
        """Run the feed on the process-wide private loop thread; returns once it runs.

        Raises:
            FeedStateError: the feed was already started or stopped.
            ConfigError: another feed of the same source uses other blobs or queue size.
        """
        if self._state is not FeedState.NEW:
            raise FeedStateError(
                f"a feed starts once; this one is {self._state.value} (create a new Feed)"
            )
        portal = acquire_loop_thread()
        with self._lock:
            self._portal = portal  # a stop() racing the start-up gives it back

        async def open_on_loop() -> None:
            self._open()

        try:
            portal.submit(open_on_loop()).result(timeout)
        except BaseException:
            with self._lock:
                mine, self._portal = self._portal, None
            if mine is not None:
                release_loop_thread(portal, timeout)
            raise
        stop_at_exit(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the feed from any thread other than its loop's; bounded by ``timeout``.

        Safe in every state and idempotent.

        Raises:
            FeedTimeoutError: the feed did not stop in time.
            AsyncFeedError: the error that stopped the feed, if not yet seen by the consumer.
        """
        with self._lock:
            if self._state is FeedState.NEW:
                self._state = FeedState.STOPPED
                self._close_sink(DropCause.STOP)
                return
            first = self._stopping is None
            if first:
                self._stopping = concurrent.futures.Future()
            stopping = self._stopping
        assert stopping is not None
        if not first:  # another thread is stopping the feed: wait for it to finish
            try:
                stopping.result(timeout + 1.0)
            except concurrent.futures.TimeoutError:
                raise FeedTimeoutError(
                    f"feed {self.source!r} did not stop within {timeout} s"
                ) from None
            return
        try:
            self._stop_on_loop(timeout)
        finally:
            stopping.set_result(None)

    def _stop_on_loop(self, timeout: float) -> None:
        loop = self._loop
        if loop is None:  # stopped before it ever started
            return
        self._check_not_on_loop("stop()", "await feed.aclose()")
        try:
            if not loop.is_closed():
                cf = asyncio.run_coroutine_threadsafe(self.aclose(timeout=timeout), loop)
                try:
                    cf.result(timeout + 1.0)
                except concurrent.futures.TimeoutError:
                    cf.cancel()
                    raise FeedTimeoutError(
                        f"feed {self.source!r} did not stop within {timeout} s"
                    ) from None
            else:
                self._raise_unseen()
        finally:
            with self._lock:
                portal, self._portal = self._portal, None
            if portal is not None:
                release_loop_thread(portal, timeout)

    def get(self, timeout: float | None = None) -> Batch:
        """The next batch, for a consumer thread other than the feed's loop.

        Raises:
            FeedTimeoutError: no batch within ``timeout`` seconds (nothing is lost).
            FeedExhausted: a finite feed delivered its last batch.
            FeedStateError: the feed is not running.
            AsyncFeedError: the error that stopped the feed.
        """
        self._check_no_sink()
        loop = self._loop
        if loop is None:
            raise FeedStateError("the feed is not started; call feed.start() first")
        self._check_not_on_loop("get()", "async for batch in feed")
        cf: concurrent.futures.Future[Batch] = concurrent.futures.Future()
        with self._lock:
            stopped = self._state is FeedState.STOPPED
            if not stopped:
                self._getters.add(cf)
        if stopped:  # its loop may be gone; the end is known without it
            self._set_end(cf)
        else:
            try:
                loop.call_soon_threadsafe(self._serve_get, cf)
            except RuntimeError:  # the loop is closed: answered by _stopped(), or never
                if not cf.done():
                    with self._lock:
                        self._getters.discard(cf)
                    raise FeedStateError(
                        f"the feed's loop is closed ({self._state.value})"
                    ) from None
        try:
            return cf.result(timeout)
        except concurrent.futures.TimeoutError:
            if cf.cancel():
                raise FeedTimeoutError(f"no batch within {timeout} s") from None
            return cf.result()
        finally:
            with self._lock:
                self._getters.discard(cf)

    def __iter__(self) -> Iterator[Batch]:
        """Iterate batches from a thread other than the feed's loop, until a finite feed ends."""
        while True:
            try:
                yield self.get()
            except FeedExhausted:
                return

    def _check_not_on_loop(self, what: str, instead: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            raise FeedStateError(f"{what} would block the feed's own event loop; use {instead}")

    def _serve_get(self, cf: concurrent.futures.Future[Batch]) -> None:
        """On the loop: hand the next batch to a waiting ``get()``, or put it back."""
        if cf.cancelled():
            return
        try:
            batch = self._batches.get_nowait()
        except asyncio.QueueEmpty:
            task = self._spawn(self._handoff(cf), "get")
            cf.add_done_callback(lambda f: _cancel_soon(task) if f.cancelled() else None)
            return
        except ChannelClosed:
            self._set_end(cf)
            return
        self._hand(cf, batch)

    async def _handoff(self, cf: concurrent.futures.Future[Batch]) -> None:
        try:
            batch = await self._batches.get()
        except ChannelClosed:
            self._set_end(cf)
            return
        self._hand(cf, batch)

    def _hand(self, cf: concurrent.futures.Future[Batch], batch: Batch) -> None:
        try:
            cf.set_result(batch)
        except concurrent.futures.InvalidStateError:  # the getter timed out meanwhile
            self._batches.put_front(batch)
            return
        self._delivered(batch)

    def _stopped(self) -> None:
        """Mark the feed stopped and end every waiting ``get()``.

        A getter's request may reach the loop too late to be served (the loop thread closes
        once its last feed stops), so the getters still waiting are answered from here.
        """
        with self._lock:
            self._state = FeedState.STOPPED
            waiting, self._getters = self._getters, set()
        for cf in waiting:
            self._set_end(cf)

    def _set_end(self, cf: concurrent.futures.Future[Batch]) -> None:
        try:
            self._raise_end()
        except StopAsyncIteration:
            exc: BaseException = FeedExhausted(f"feed {self.source!r} delivered its last batch")
        except BaseException as err:
            exc = err
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            cf.set_exception(exc)


def _cancel_soon(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        task.get_loop().call_soon_threadsafe(task.cancel)
