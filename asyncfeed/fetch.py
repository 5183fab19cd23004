"""Fetch workers: take the next call's outcome, account for it, queue its chunk.

The workers are plain coroutines (the run creates their tasks); where a call runs is the
backend's business (``backend.py``). Every outcome, whatever the backend, goes through one
accounting path, :meth:`Fetcher.settle`: count the call and its time, check the chunk, apply
the error policy. A seed-style fetcher that returns None ("nothing this time") is called
again after a backoff that starts at 1 ms and doubles up to 50 ms, reset by the first chunk,
so a fetcher with nothing to give costs next to no CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, cast, final

from .attribution import Blocked
from .backend import KeyCall, Outcome, SeedCall, SizeHint, WorkerBackend
from .checkpoint import Tracker
from .chunks import Arrays, ChunkSchema
from .keys import Reorderer
from .keysource import END, WAIT, KeyItem, KeySource
from .queues import Channel, ChannelClosed, Chunk
from .stats import DropCause, FeedCounters, Ledger, Stage

__all__ = ["IDLE_MAX", "IDLE_MIN", "ErrorPolicy", "Fetcher", "next_worker_id"]

log = logging.getLogger("asyncfeed.fetch")

IDLE_MIN: Final = 0.001  # first wait after a None, in seconds; doubles while None comes back
IDLE_MAX: Final = 0.05

_worker_ids = itertools.count()


def next_worker_id() -> int:
    """A worker id unique across every feed of the process (Caffe2's global coordinator)."""
    return next(_worker_ids)


def _cancelling() -> Callable[[], int]:
    """The running task's ``cancelling``: a worker checks it to stop even when its fetcher
    caught the cancellation and returned (a bare ``except:`` retry, say), since the stop it
    swallowed still applies."""
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling


ErrorPolicy = Callable[[Exception, int | None, Any], None]


@final
class Fetcher:
    """What fetch workers share: the source queue, the counters and the error policy.

    Args:
        schema, ledger, chunks: the source's chunk schema, row ledger and chunk queue.
        counters: the feed's own counters.
        on_error: called with (exception, worker_id, key) for every failed fetch or bad
            chunk; raises to stop the feed, returns to skip.
        stop_cause: why rows a stopping worker holds are dropped (the feed stopping, or
            failing).
    """

    __slots__ = (
        "_warned_empty",
        "blocked",
        "chunks",
        "counters",
        "ledger",
        "on_error",
        "schema",
        "stop_cause",
    )

    def __init__(
        self,
        *,
        schema: ChunkSchema,
        ledger: Ledger,
        chunks: Channel[Chunk],
        counters: FeedCounters,
        on_error: ErrorPolicy,
        stop_cause: Callable[[], DropCause] = lambda: DropCause.STOP,
    ) -> None:
        self.schema: Final = schema
        self.ledger: Final = ledger
        self.chunks: Final = chunks
        self.counters: Final = counters
        self.on_error: Final = on_error
        self.stop_cause: Final = stop_cause
        self.blocked: Final = Blocked()  # workers waiting for room in the chunk queue
        self._warned_empty = False

    # -- the one accounting path ---------------------------------------------------------------

    def _count(self, outcome: Outcome) -> tuple[bool, Any]:
        """Count one call and its time; (returned, value) with None counted as such."""
        returned, value, seconds = outcome
        counters = self.counters
        counters.fetch_calls += 1
        counters.fetch_time += seconds
        if not returned:
            counters.fetch_errors += 1
        elif value is None:
            counters.fetch_none += 1
        return returned, value

    def settle(self, outcome: Outcome, worker_id: int | None, key: Any) -> Arrays | None:
        """Account for one call's outcome: its checked chunk, or None (nothing to queue).

        Raises:
            AsyncFeedError: the error policy stops the feed (see :class:`ErrorBudget`).
        """
        returned, value, seconds = outcome  # counted as _count does, inline: once per call
        counters = self.counters
        counters.fetch_calls += 1
        counters.fetch_time += seconds
        if returned:
            if value is None:
                counters.fetch_none += 1
                return None
            try:
                return self.schema.check(value, worker_id=worker_id, key=key)
            except Exception as exc:
                value = exc
        counters.fetch_errors += 1
        self.on_error(value, worker_id, key)
        return None

    def drop_leftover(self, outcome: Outcome, worker_id: int | None, cause: DropCause) -> None:
        """On the loop: count an outcome no worker will queue, and drop its rows."""
        returned, value = self._count(outcome)
        if not returned or value is None:
            return
        try:
            rows = self.schema.check(value, worker_id=worker_id)[0].shape[0]
        except Exception:
            self.counters.fetch_errors += 1
            return
        if rows == 0:
            self.counters.fetch_empty += 1
        else:
            self.ledger.drop(rows, None, cause)

    def drop_late(self, result: Any) -> None:
        """Off the loop: count the rows of a result that came back after its worker stopped
        as fetched, and dropped (``abandoned``)."""
        rows = self.schema.rows_if_valid(result)
        if rows:
            log.debug("dropping %d rows a fetcher returned after its worker ended", rows)
            self.ledger.drop(rows, None, DropCause.ABANDONED)

    # -- workers -------------------------------------------------------------------------------

    async def run_seed_worker(self, worker_id: int, call: SeedCall) -> None:
        """Repeat ``call`` forever, queueing every chunk; back off while it returns None."""
        settle, offer, counters = self.settle, self._offer, self.counters
        cancelling = _cancelling()
        idle = 0.0
        try:
            while True:
                if cancelling():
                    raise asyncio.CancelledError
                counters.inflight += 1
                try:
                    outcome = await call()
                finally:
                    counters.inflight -= 1
                arrays = settle(outcome, worker_id, None)
                del outcome
                if arrays is None:
                    idle = min(IDLE_MAX, idle * 2 or IDLE_MIN)
                    counters.idle += 1
                    try:
                        await asyncio.sleep(idle)
                    finally:
                        counters.idle -= 1
                    continue
                idle = 0.0
                try:
                    full = offer(arrays, worker_id, cancelling)
                    if full is not None:
                        await self._put(full)
                except ChannelClosed:
                    return
                del arrays  # a worker holds no chunk while its next call runs
        finally:
            cause = self.stop_cause()
            for outcome in call.leftovers():
                self.drop_leftover(outcome, worker_id, cause)

    async def run_key_worker(
        self,
        source: KeySource,
        reorder: Reorderer | None,
        call: KeyCall,
        tracker: Tracker,
    ) -> None:
        """Fetch keys from ``source`` until it has no more; keep key order if asked.

        Each key is settled once: its chunk queued (rows already received before a resume
        sliced off), or nothing to queue (``tracker`` learns of it at once).
        """
        take_now, counters = source.take_now, self.counters
        settle, offer, settled = self.settle, self._offer, source.settled
        cancelling = _cancelling()
        while True:
            item = take_now()
            if item is WAIT:
                item = await source.take()
            if item is END:
                return
            seq, key, (epoch, index, position, skip) = cast(KeyItem, item)
            if cancelling():
                raise asyncio.CancelledError
            counters.inflight += 1
            try:
                outcome = await call(key)
            finally:
                counters.inflight -= 1
            errors = counters.fetch_errors
            arrays = settle(outcome, None, key)
            del outcome
            if arrays is not None and skip:
                arrays = tuple(a[skip:] for a in arrays)
            if reorder is not None:
                await reorder.wait_turn(seq)
            try:
                rows = 0 if arrays is None else arrays[0].shape[0]
                if rows:
                    assert arrays is not None
                    tag = (epoch, index, position, skip, skip + rows, skip + rows)
                    try:
                        full = offer(arrays, tag, cancelling)
                        if full is not None:
                            await self._put(full)
                    except ChannelClosed:
                        return
                else:
                    if arrays is not None:
                        counters.fetch_empty += 1
                    skipped = counters.fetch_errors != errors
                    tracker.nothing(epoch, index, position, skipped=skipped)
            finally:
                if reorder is not None:
                    reorder.done(seq)
                settled(epoch)
            arrays = None  # a worker holds no chunk while it waits for its next key

    def _offer(self, arrays: Arrays, origin: object, cancelling: Callable[[], int]) -> Chunk | None:
        """Count a checked chunk's rows as fetched and queue it without waiting. Returns the
        chunk when the queue is full (the worker awaits :meth:`_put` with it), else None. Not
        a coroutine: most chunks find room.

        Raises:
            ChannelClosed: the source ended; the rows are dropped.
        """
        rows = arrays[0].shape[0]
        if rows == 0:
            self.counters.fetch_empty += 1
            if not self._warned_empty:
                self._warned_empty = True
                log.warning("skipping a zero-row chunk from %s (warned once)", origin)
            return None
        self.ledger.fetch(rows)
        chunk: Chunk = (arrays, rows, origin)
        try:
            if cancelling():  # the fetcher swallowed the stop: the rows are dropped
                raise asyncio.CancelledError
            if not self.chunks.put_nowait(chunk):
                return chunk
        except BaseException as exc:
            self._dropped(rows, exc)
            raise
        self.counters.enqueue_count += 1
        return None

    async def _put(self, chunk: Chunk) -> None:
        """Queue a chunk :meth:`_offer` found no room for, waiting for room.

        Raises:
            ChannelClosed: the source ended; the rows are dropped.
        """
        start = time.perf_counter()
        self.blocked.enter()
        try:
            await self.chunks.put(chunk)
        except BaseException as exc:
            self._dropped(chunk[1], exc)
            raise
        finally:
            self.blocked.leave()
        self.counters.enqueue_time += time.perf_counter() - start
        self.counters.enqueue_count += 1

    def _dropped(self, rows: int, exc: BaseException) -> None:
        cause = DropCause.STOP if isinstance(exc, ChannelClosed) else self.stop_cause()
        self.ledger.drop(rows, Stage.QUEUED, cause)


Workers = list[tuple[str, Coroutine[Any, Any, None]]]


def seed_workers(
    fetcher: Fetcher, backend: WorkerBackend, worker_ids: Sequence[int], size: SizeHint
) -> Workers:
    """The coroutines of a seed-style feed's workers, by task name (the run makes the tasks)."""
    return [
        (f"worker-{wid}", fetcher.run_seed_worker(wid, backend.seed_call(wid, size)))
        for wid in worker_ids
    ]


def key_workers(
    fetcher: Fetcher, backend: WorkerBackend, source: KeySource, tracker: Tracker, count: int
) -> Workers:
    """The coroutines of a keyed feed: its key workers (the last one to end closes the chunk
    queue, so the rebatch stage flushes and ends) and, for async keys, their dispatcher."""
    reorder = Reorderer() if source.ordered else None
    call = backend.key_call()
    live = [count]

    async def key_worker() -> None:
        await fetcher.run_key_worker(source, reorder, call, tracker)
        live[0] -= 1
        if live[0] == 0:
            fetcher.chunks.close()  # end of data

    workers: Workers = [(f"worker-{i}", key_worker()) for i in range(count)]
    if source.channel is not None:
        workers.append(("keys", source.dispatch()))
    return workers
