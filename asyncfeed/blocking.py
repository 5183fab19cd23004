"""The blocking face of a feed, for synchronous programs: a thin adaptor over the loop thread.

``start()`` opens the feed on the process-wide private loop thread (``bridge.LoopThread``);
``get()`` and ``for batch in feed`` take batches from any other thread; ``stop()`` stops the
feed on its loop, by one deadline. Batches cross threads through a
``concurrent.futures.Future``: a getter that times out cancels it, and a batch that lost that
race goes back to the head of the batch channel, so nothing is lost.

:class:`SyncFace` keeps only what the blocking face itself needs (the loop thread it holds,
the stop in progress, the getters waiting); everything else is handed to its methods by the
feed. Tasks are still made by the run alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, Final, final

from .batch import Batch
from .bridge import LoopThread, acquire_loop_thread, release_loop_thread
from .errors import FeedStateError, FeedTimeoutError
from .queues import ChannelClosed
from .run import Run
from .state import FeedState, Lifecycle

__all__ = ["STOP_SLACK", "SyncFace", "check_on_loop", "forgotten", "on_loop"]

#: A blocking stop waits this long past its deadline for the loop to report the outcome
#: (the loop's own wait ends at the deadline); then the loop is blocked, and that is an error.
STOP_SLACK: Final = 0.15
#: ... and the loop thread, when the stop ends it, gets this long more to exit.
JOIN_SLACK: Final = 0.05


@final
class SyncFace:
    """start / stop / get of one feed from threads other than its loop's."""

    __slots__ = ("_getters", "_lock", "_portal", "_stopping")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._portal: LoopThread | None = None
        self._stopping: concurrent.futures.Future[None] | None = None
        self._getters: set[concurrent.futures.Future[Batch]] = set()

    def portal_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop of the loop thread this feed was started on, if any."""
        portal = self._portal
        return None if portal is None else portal.loop

    def start(self, open_on_loop: Callable[[], None], timeout: float) -> None:
        """Run ``open_on_loop()`` on the process-wide loop thread; return once it ran.

        Raises:
            whatever ``open_on_loop`` raised.
        """
        portal = acquire_loop_thread()
        with self._lock:
            self._portal = portal  # a stop() racing the start-up gives it back

        async def opener() -> None:
            open_on_loop()

        try:
            portal.submit(opener()).result(timeout)
        except BaseException:
            with self._lock:
                mine, self._portal = self._portal, None
            if mine is not None:
                release_loop_thread(portal, timeout)
            raise

    def stop(
        self,
        loop: asyncio.AbstractEventLoop | None,
        aclose_by: Callable[[float, float], Coroutine[Any, Any, None]],
        raise_unseen: Callable[[], None],
        deadline: float,
        timeout: float,
    ) -> None:
        """Stop the feed on ``loop`` by ``deadline``; a second caller waits for the first.

        Raises:
            FeedStateError: called on the feed's own loop.
            FeedTimeoutError: the loop did not report the stop by the deadline (it is
                blocked) or the feed's tasks did not end.
            AsyncFeedError: the error that stopped the feed, if not yet seen.
        """
        with self._lock:
            stopping = self._stopping
            first = stopping is None
            if stopping is None:
                stopping = self._stopping = concurrent.futures.Future()
        if not first:  # another thread is stopping the feed: wait for it to finish
            try:
                stopping.result(max(0.0, deadline - time.monotonic()) + STOP_SLACK)
            except concurrent.futures.TimeoutError:
                raise FeedTimeoutError(f"the feed did not stop within {timeout:g} s") from None
            return
        try:
            self._stop(loop, aclose_by, raise_unseen, deadline, timeout)
        finally:
            with self._lock:
                self._stopping = None  # a later stop() tries again if this one timed out
            stopping.set_result(None)

    def _stop(
        self,
        loop: asyncio.AbstractEventLoop | None,
        aclose_by: Callable[[float, float], Coroutine[Any, Any, None]],
        raise_unseen: Callable[[], None],
        deadline: float,
        timeout: float,
    ) -> None:
        if loop is None:  # stopped before it ever started
            return
        _check_not_on_loop(loop, "stop()", "await feed.aclose()")
        if loop.is_closed():
            self._release(deadline)
            raise_unseen()
            return
        cf = asyncio.run_coroutine_threadsafe(aclose_by(deadline, timeout), loop)
        try:
            cf.result(max(0.0, deadline - time.monotonic()) + STOP_SLACK)
        except concurrent.futures.TimeoutError:
            cf.cancel()  # the loop is blocked; it keeps its thread, and a later stop() retries
            raise FeedTimeoutError(
                f"the feed did not stop within {timeout:g} s: its event loop is blocked"
            ) from None
        except FeedTimeoutError:
            raise  # its tasks did not end: the loop keeps running for a later stop()
        except BaseException:
            self._release(deadline)
            raise
        self._release(deadline)

    def _release(self, deadline: float) -> None:
        """Give back the loop thread this feed was started on (it ends with its last feed)."""
        with self._lock:
            portal, self._portal = self._portal, None
        if portal is not None:
            release_loop_thread(portal, max(0.0, deadline + JOIN_SLACK - time.monotonic()))

    def get(self, run: Run | None, life: Lifecycle, timeout: float | None) -> Batch:
        """The next batch, waiting up to ``timeout`` seconds (None: no limit).

        Raises:
            FeedTimeoutError: no batch within ``timeout`` (nothing is lost).
            FeedExhausted: a finite feed delivered its last batch, or the feed was stopped.
            FeedStateError: the feed is not started, or is called on its own loop.
            AsyncFeedError: the error that stopped the feed.
        """
        if run is None:
            raise FeedStateError("the feed is not started; call feed.start() first")
        _check_not_on_loop(run.loop, "get()", "async for batch in feed")
        cf: concurrent.futures.Future[Batch] = concurrent.futures.Future()
        with self._lock:
            stopped = life.state is FeedState.STOPPED
            if not stopped:
                self._getters.add(cf)
        if stopped:  # its loop may be gone; the end is known without it
            _set_exception(cf, run.end_error())
        else:
            try:
                run.loop.call_soon_threadsafe(_serve_get, run, cf)
            except RuntimeError:  # the loop is closed: answered at STOPPED, or never
                if not cf.done():
                    with self._lock:
                        self._getters.discard(cf)
                    raise FeedStateError(
                        f"the feed's loop is closed ({life.state.value})"
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

    def answer_waiting(self, run: Run) -> None:
        """The feed stopped: end every ``get()`` still waiting.

        A getter's request may reach the loop too late to be served (the loop thread ends
        once its last feed stops), so the getters still waiting are answered here.
        """
        with self._lock:
            waiting, self._getters = self._getters, set()
        for cf in waiting:
            _set_exception(cf, run.end_error())


def _serve_get(run: Run, cf: concurrent.futures.Future[Batch]) -> None:
    """On the loop: hand the next batch to a waiting ``get()``, or its end."""
    if cf.cancelled():
        return
    run.waits.asked()
    try:
        batch = run.batches.get_nowait()
    except asyncio.QueueEmpty:
        waiting = run.probe.cause(), time.perf_counter()
        task = run.spawn(_hand_when_ready(run, cf, waiting), "get")
        cf.add_done_callback(lambda f: _cancel_soon(task) if f.cancelled() else None)
        return
    except ChannelClosed:
        _set_exception(cf, run.end_error())
        return
    _hand(run, cf, batch)


async def _hand_when_ready(
    run: Run, cf: concurrent.futures.Future[Batch], waiting: tuple[str, float]
) -> None:
    try:
        batch = await run.batches.get()
    except ChannelClosed:
        _set_exception(cf, run.end_error())
        return
    finally:
        run.waits.add(waiting[0], time.perf_counter() - waiting[1])
    _hand(run, cf, batch)


def _hand(run: Run, cf: concurrent.futures.Future[Batch], batch: Batch) -> None:
    """Hand ``batch`` to a waiting ``get()``: counted as received (a ``state_dict()`` its
    thread takes next includes it) before the getter can see it, and only if it takes it."""
    if not cf.set_running_or_notify_cancel():  # the getter timed out meanwhile
        run.batches.put_front(batch)
        return
    run.delivered(batch)
    cf.set_result(batch)


def _cancel_soon(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        task.get_loop().call_soon_threadsafe(task.cancel)


def check_on_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Raise ``FeedStateError`` unless called on ``loop`` (the feed's own)."""
    if asyncio.get_running_loop() is not loop:
        raise FeedStateError("the feed runs on another event loop; use feed.get() from this thread")


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called on ``loop``'s own thread, while it runs."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _check_not_on_loop(loop: asyncio.AbstractEventLoop, what: str, instead: str) -> None:
    if on_loop(loop):
        raise FeedStateError(f"{what} would block the feed's own event loop; use {instead}")


def _set_exception(cf: concurrent.futures.Future[Batch], exc: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        cf.set_exception(exc)


def forgotten(run: Run, life: Lifecycle, name: str) -> None:
    """A feed was collected while it ran: warn, and have its loop stop the run."""
    if life.state is FeedState.STOPPED:
        return
    warnings.warn(f"unclosed {name}", ResourceWarning, stacklevel=2)
    try:
        run.loop.call_soon_threadsafe(run.abandon)
    except RuntimeError:  # its loop is closed: nothing of it runs any more
        pass
