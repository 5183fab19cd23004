"""Fetch workers: call the user's fetcher, check its chunk, put it on the chunk queue.

Async fetchers are awaited on the loop; sync fetchers run in an executor. These are plain
coroutines: ``feed.py`` runs each one as a task. A sync call still running when its worker is
cancelled is abandoned: the thread finishes on its own and its late result is counted as
dropped (``DropCause.ABANDONED``), never delivered.

A sync seed-style fetcher on the feed's own thread pool runs in a :class:`~.bridge.Pump`:
its thread calls it over and over, as Caffe2's fetcher threads did, a few results ahead of
its worker (:func:`pump_ahead`), instead of one round trip through the loop per call.
Results made ahead that the worker never took when it stops are counted as calls (and
errors) all the same, and their rows dropped for the reason the worker stopped.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor, Executor
from concurrent.futures import Future as ConcurrentFuture
from typing import Any, Final, final

from .bridge import DaemonThreadPool, Outcome
from .chunks import Arrays, ChunkSchema, describe_origin
from .errors import AsyncFeedError, FetchError
from .keys import Reorderer
from .protocols import is_async_callable
from .queues import Channel, ChannelClosed, Chunk
from .stats import DropCause, FeedCounters, Ledger, Stage

__all__ = [
    "ErrorBudget",
    "Fetcher",
    "next_worker_id",
    "pump_ahead",
]

log = logging.getLogger("asyncfeed.fetch")

_worker_ids = itertools.count()

MAX_PUMP_AHEAD = 16


def pump_ahead(max_buffered_chunks: int, concurrency: int) -> int:
    """How many results each pumped sync fetcher may make ahead of its worker.

    Enough to hand results over in bursts (16 ahead runs 1-row chunks about 2x faster than
    4), while all the pumps together hold at most half as many chunks as the chunk queue.
    """
    return max(1, min(MAX_PUMP_AHEAD, max_buffered_chunks // (2 * concurrency)))


def next_worker_id() -> int:
    """A worker id unique across every feed of the process (Caffe2's global coordinator)."""
    return next(_worker_ids)


def _stop_if_cancelled() -> None:
    """Raise CancelledError when this task was cancelled but the fetcher swallowed it.

    A fetcher that catches the cancellation and returns (a bare ``except:`` retry, say)
    must not keep its worker running: the stop it swallowed still applies.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


ErrorPolicy = Callable[[Exception, int | None, Any], None]


@final
class ErrorBudget:
    """The feed's error policy: raise to stop the feed, return to skip the failure.

    ``max_errors=None`` stops on the first failure: a :class:`ChunkError` (or any other
    asyncfeed error) as it is, anything else as :class:`FetchError` chained to it. With
    ``max_errors=N`` failures are logged and skipped until more than N occurred. A broken
    executor (``BrokenExecutor``: a dead worker process, or one shut down under the feed)
    never recovers, so it stops the feed whatever the budget.
    """

    __slots__ = ("counters", "max_errors")

    def __init__(self, max_errors: int | None, counters: FeedCounters) -> None:
        self.max_errors: Final = max_errors
        self.counters: Final = counters

    def __call__(self, exc: Exception, worker_id: int | None, key: Any) -> None:
        origin = describe_origin(worker_id, key)
        budget = self.max_errors
        if budget is None or isinstance(exc, BrokenExecutor):
            if isinstance(exc, AsyncFeedError):
                raise exc
            raise FetchError(
                f"fetch failed in {origin}: {type(exc).__name__}: {exc}",
                worker_id=worker_id,
                key=key,
            ) from exc
        errors = self.counters.fetch_errors
        if errors > budget:
            raise FetchError(
                f"{errors} failed fetches exceed max_errors={budget}; last in {origin}: "
                f"{type(exc).__name__}: {exc}",
                worker_id=worker_id,
                key=key,
            ) from exc
        log.warning(
            "skipping failed fetch in %s (%d of max_errors=%d): %s: %s",
            origin,
            errors,
            budget,
            type(exc).__name__,
            exc,
        )


@final
class Fetcher:
    """What fetch workers share: the user's callable, the source queue and the counters.

    Args:
        fn: the user's fetcher (seed-style or keyed).
        schema, ledger, chunks: the source's chunk schema, row ledger and chunk queue.
        counters: the feed's own counters.
        executor: where a sync ``fn`` runs; unused for an async one.
        on_error: called with (exception, worker_id, key) for every failed fetch or bad
            chunk; raises to stop the feed, returns to skip.
        stop_cause: why a worker cancelled while it holds a chunk drops its rows (the feed
            stopping, or failing); default :attr:`DropCause.STOP`.
        pump_ahead: results a sync fetcher on a :class:`DaemonThreadPool` may make ahead.
    """

    __slots__ = (
        "_executor",
        "_is_async",
        "_pump_ahead",
        "_warned_empty",
        "chunks",
        "counters",
        "fn",
        "ledger",
        "on_error",
        "schema",
        "stop_cause",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        schema: ChunkSchema,
        ledger: Ledger,
        chunks: Channel[Chunk],
        counters: FeedCounters,
        executor: Executor | None,
        on_error: ErrorPolicy,
        stop_cause: Callable[[], DropCause] = lambda: DropCause.STOP,
        pump_ahead: int = 1,
    ) -> None:
        self.fn: Final = fn
        self._pump_ahead: Final = pump_ahead
        self._is_async: Final = is_async_callable(fn)
        if not self._is_async and executor is None:
            raise ValueError("a sync fetcher needs an executor")
        self._executor: Final = executor
        self.schema: Final = schema
        self.ledger: Final = ledger
        self.chunks: Final = chunks
        self.counters: Final = counters
        self.on_error: Final = on_error
        self.stop_cause: Final = stop_cause
        self._warned_empty = False

    async def run_seed_worker(self, worker_id: int, batch_size: int) -> None:
        """Call ``fn(worker_id, batch_size)`` forever, queueing every chunk it returns."""
        if self._is_async:
            await self._run_async_seed(worker_id, batch_size)
            return
        if isinstance(self._executor, DaemonThreadPool):
            await self._run_pumped_seed(self._executor, worker_id, batch_size)
            return
        while True:
            _stop_if_cancelled()
            arrays = await self._fetch((worker_id, batch_size), worker_id, None)
            if arrays is None:
                await asyncio.sleep(0)  # a fetcher with nothing to give must not starve the loop
                continue
            if not await self._offer(arrays, worker_id):
                return
            arrays = None  # a worker holds no chunk while its next call runs

    async def _run_async_seed(self, worker_id: int, batch_size: int) -> None:
        """``run_seed_worker`` for an async fetcher, with ``_fetch`` and the common case of
        ``_offer`` (room in the queue) inlined.

        This loop runs once per chunk; on small chunks its call overhead is a large part of
        the feed's cost. Counting, checks and error handling are those of the general path.
        """
        fn = self.fn
        counters = self.counters
        check = self.schema.check
        ledger = self.ledger
        put_nowait = self.chunks.put_nowait
        perf = time.perf_counter
        task = asyncio.current_task()
        assert task is not None
        while True:
            if task.cancelling():  # a fetcher swallowed the stop's cancel: it still applies
                raise asyncio.CancelledError
            arrays: Arrays | None = None
            start = perf()
            try:
                result = await fn(worker_id, batch_size)
                if result is None:
                    counters.fetch_none += 1
                else:
                    arrays = check(result, worker_id=worker_id)
            except Exception as exc:
                counters.fetch_errors += 1
                self.on_error(exc, worker_id, None)
            finally:
                counters.fetch_calls += 1
                counters.fetch_time += perf() - start
            if arrays is None:
                await asyncio.sleep(0)  # a fetcher with nothing to give must not starve the loop
                continue
            rows = arrays[0].shape[0]
            if rows == 0:
                await self._offer(arrays, worker_id)  # counted and skipped
                continue
            chunk: Chunk = (arrays, rows, worker_id)
            ledger.fetch(rows)
            if task.cancelling():  # returned after swallowing the stop: count, drop, stop
                ledger.drop(rows, Stage.QUEUED, self.stop_cause())
                raise asyncio.CancelledError
            try:
                queued = put_nowait(chunk)
            except ChannelClosed:
                ledger.drop(rows, Stage.QUEUED, DropCause.STOP)
                return
            if queued:
                counters.enqueue_count += 1
            elif not await self._enqueue(chunk, rows):
                return
            del result, arrays, chunk  # a worker holds no chunk while its next call runs

    async def _run_pumped_seed(
        self, pool: DaemonThreadPool, worker_id: int, batch_size: int
    ) -> None:
        """``run_seed_worker`` for a sync fetcher on the feed's own pool, through a pump."""
        counters = self.counters
        pump = pool.pump(
            functools.partial(self.fn, worker_id, batch_size),
            ahead=self._pump_ahead,
            on_late=self._count_late_outcome,
        )
        try:
            while True:
                _stop_if_cancelled()
                returned, value, seconds = await pump.get()
                counters.fetch_calls += 1
                counters.fetch_time += seconds
                arrays: Arrays | None = None
                try:
                    if not returned:
                        raise value
                    if value is None:
                        counters.fetch_none += 1
                    else:
                        arrays = self.schema.check(value, worker_id=worker_id)
                except Exception as exc:
                    counters.fetch_errors += 1
                    self.on_error(exc, worker_id, None)
                if arrays is None:
                    await asyncio.sleep(0)  # nothing to give: do not starve the loop
                elif not await self._offer(arrays, worker_id):
                    return
                del value, arrays  # a worker holds no chunk while it waits for the next
        finally:
            cause = self.stop_cause()
            for returned, value, seconds in pump.stop():  # made ahead, never taken
                counters.fetch_calls += 1
                counters.fetch_time += seconds
                if not returned:
                    counters.fetch_errors += 1
                elif value is None:
                    counters.fetch_none += 1
                else:
                    self._drop_unqueued(value, worker_id, cause)

    async def run_key_worker(
        self, keys: Channel[tuple[int, Any]], reorder: Reorderer | None
    ) -> None:
        """Fetch keys from ``keys`` until it is closed and drained; keep key order if asked."""
        while True:
            try:
                seq, key = await keys.get()
            except ChannelClosed:
                return
            _stop_if_cancelled()
            arrays = await self._fetch((key,), None, key)
            if reorder is not None:
                await reorder.wait_turn(seq)
            try:
                if arrays is not None and not await self._offer(arrays, key):
                    return
            finally:
                if reorder is not None:
                    reorder.done(seq)
            arrays = None  # a worker holds no chunk while it waits for its next key

    async def _fetch(self, args: tuple[Any, ...], worker_id: int | None, key: Any) -> Arrays | None:
        """One call of the fetcher, checked. None: nothing to queue (None, or skipped error)."""
        counters = self.counters
        start = time.perf_counter()
        try:
            result = await self._call(args)
            if result is None:
                counters.fetch_none += 1
                return None
            return self.schema.check(result, worker_id=worker_id, key=key)
        except Exception as exc:
            counters.fetch_errors += 1
            self.on_error(exc, worker_id, key)
            return None
        finally:
            counters.fetch_calls += 1
            counters.fetch_time += time.perf_counter() - start

    def _call(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        if self._is_async:
            coro: Awaitable[Any] = self.fn(*args)
            return coro
        assert self._executor is not None
        try:
            cf = self._executor.submit(self.fn, *args)
        except BrokenExecutor:
            raise
        except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
            raise BrokenExecutor(f"{self._executor!r} refused the call: {exc}") from exc
        return self._await_abandonable(cf)

    async def _await_abandonable(self, cf: ConcurrentFuture[Any]) -> Any:
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            if not cf.cancel():  # already running: it cannot be interrupted
                cf.add_done_callback(self._count_late)
            raise

    def _count_late(self, cf: ConcurrentFuture[Any]) -> None:
        if not cf.cancelled() and cf.exception() is None:
            self._drop_result(cf.result(), DropCause.ABANDONED)

    def _count_late_outcome(self, outcome: Outcome) -> None:
        if outcome[0]:
            self._drop_result(outcome[1], DropCause.ABANDONED)

    def _drop_result(self, result: Any, cause: DropCause) -> None:
        """Off the loop: count the rows of a result no worker will queue as fetched, and
        dropped."""
        rows = self.schema.rows_if_valid(result)
        if rows:
            log.debug("dropping %d rows a fetcher returned after its worker ended", rows)
            self.ledger.drop(rows, None, cause)

    def _drop_unqueued(self, result: Any, worker_id: int, cause: DropCause) -> None:
        """On the loop: count a result its worker will not queue, as a taken one would be."""
        try:
            rows = self.schema.check(result, worker_id=worker_id)[0].shape[0]
        except Exception:
            self.counters.fetch_errors += 1
            return
        if rows == 0:
            self.counters.fetch_empty += 1
        else:
            self.ledger.drop(rows, None, cause)

    async def _offer(self, arrays: Arrays, origin: object) -> bool:
        """Queue a checked chunk; False when the chunk queue was closed (the source ended)."""
        rows = arrays[0].shape[0]
        if rows == 0:
            self.counters.fetch_empty += 1
            if not self._warned_empty:
                self._warned_empty = True
                log.warning("skipping a zero-row chunk from %s (warned once)", origin)
            return True
        self.ledger.fetch(rows)
        return await self._enqueue((arrays, rows, origin), rows)

    async def _enqueue(self, chunk: Chunk, rows: int) -> bool:
        """Queue a chunk already counted as fetched, waiting for room; False once closed."""
        try:
            _stop_if_cancelled()
            if not self.chunks.put_nowait(chunk):
                start = time.perf_counter()
                await self.chunks.put(chunk)
                self.counters.enqueue_time += time.perf_counter() - start
        except ChannelClosed:
            self.ledger.drop(rows, Stage.QUEUED, DropCause.STOP)
            return False
        except BaseException:
            self.ledger.drop(rows, Stage.QUEUED, self.stop_cause())
            raise
        self.counters.enqueue_count += 1
        return True
