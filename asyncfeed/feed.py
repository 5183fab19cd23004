"""``Feed``: wires fetchers, the chunk queue, the rebatcher and the consumer together.

This module alone creates tasks: one runner task per feed, holding one ``TaskGroup`` with the
fetch workers, the rebatch stage and the stats logger.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from typing import Any, Self, final

from .blocking import BlockingFeed
from .bridge import (
    DaemonThreadPool,
    LoopThread,
    stop_at_exit,
    to_thread,
)
from .errors import (
    AsyncFeedError,
    ConfigError,
    FeedStateError,
    FeedTimeoutError,
    FetchError,
    first_error,
)
from .fetch import ErrorBudget, Fetcher, next_worker_id, pump_ahead
from .handoff import SinkBridge, check_sink
from .keys import Keys, Reorderer, check_shard
from .options import FeedOptions
from .procs.options import ProcessOptions
from .procs.pool import WorkerPool
from .protocols import FetchFn, FetchOneFn, is_async_callable
from .queues import Channel, ChannelClosed, SourceQueue, attach_source, detach_source
from .rebatch import Batch, Rebatcher
from .resources import fetcher_host_stats, open_fetcher
from .sinks import Sink, allocator_of
from .stages import RebatchStage, dispatch_keys, log_every
from .state import FeedState
from .stats import (
    DropCause,
    ExternalLogger,
    FeedCounters,
    FeedStats,
    LagWarning,
    Stage,
)

__all__ = ["Feed", "FeedState"]

log = logging.getLogger("asyncfeed.feed")


@final
class Feed(BlockingFeed):
    """A streaming input pipeline: fetchers → bounded chunk queue → rebatcher → batches.

    Args:
        fetch: ``fetch(worker_id, batch_size)`` returning a chunk (a list of arrays, one per
            blob, or a mapping blob → array) or None for "nothing this time". ``async def``
            fetchers run as ``concurrency`` tasks on the loop; plain functions run in
            ``executor`` (default: a pool of ``concurrency`` daemon threads).
        blobs: blob names, in the order chunks hold their arrays.
        batch_size: rows per batch (also passed to ``fetch`` as a hint).
        concurrency: number of fetch workers.
        source: chunk-queue name; feeds of one source on one loop share its queue.
        max_buffered_chunks: bound of the chunk queue. Sync fetchers on the feed's own
            threads may hold up to half as many more, made ahead of their workers.
        prefetch_batches: full batches kept ready for the consumer.
        executor: where a sync fetcher runs, one submit per call; a ``ProcessPoolExecutor``
            needs a picklable fetcher. Not shut down by the feed. Default: ``concurrency``
            daemon threads, each calling its fetcher over and over (Caffe2's fetcher threads).
        init_fun: called once with the feed before the fetchers start; may be async.
        rebatch: False passes every chunk through as one batch (Caffe2's ``dont_rebatch``).
        drop_last: for finite sources, drop the final partial batch (counted as dropped).
        max_errors: None stops the feed on the first failed fetch or bad chunk; N skips
            failures (counted) and stops once more than N occurred.
        log_interval: seconds between stats log lines and external-logger calls; None: never.
        external_loggers: objects with ``log(dict)`` called every ``log_interval``.
        sink: hand every batch to ``sink.put`` on a dedicated thread instead of delivering
            it to ``async for`` / ``get()`` (see ``asyncfeed.sinks``); up to 4 batches wait
            for that thread besides the sink's own capacity. Stopping the feed closes the
            sink; the sink's reader closing it stops the feed (rows not taken are counted
            as ``sink_closed``); a finite feed closes it after its last batch.
        processes: None runs the fetchers in this process; N runs them in N worker
            processes, each with its own event loop and its share of ``concurrency`` (sync
            fetchers on a thread pool inside each). Chunks come back to this process, where
            checking, rebatching and accounting happen as usual. The fetcher must be
            picklable and create its sessions lazily, in the loop that runs it.
        start_method: how worker processes start: ``"spawn"`` (default), ``"forkserver"``
            or ``"fork"`` (no pickling needed).
        worker_init: ``worker_init(worker_index)``, called once in each worker process
            before it fetches (per-process sessions, RNG seeds); may be async.

    Consume with ``async with feed: async for batch in feed: ...`` on the caller's loop, or
    ``feed.start()``, ``feed.get()`` / ``for batch in feed``, ``feed.stop()`` from
    synchronous code (the feed then runs on a private loop thread).

    Raises:
        ConfigError: at construction, for any invalid argument.
    """

    def __init__(
        self,
        fetch: FetchFn,
        *,
        blobs: Sequence[str],
        batch_size: int,
        concurrency: int = 4,
        source: str = "train",
        max_buffered_chunks: int = 800,
        prefetch_batches: int = 2,
        executor: Executor | None = None,
        init_fun: Callable[[Feed], Any] | None = None,
        rebatch: bool = True,
        drop_last: bool = False,
        max_errors: int | None = None,
        log_interval: float | None = 60.0,
        external_loggers: Sequence[ExternalLogger] = (),
        sink: Sink | None = None,
        processes: int | None = None,
        start_method: str | None = None,
        worker_init: Callable[[int], Any] | None = None,
    ) -> None:
        options = FeedOptions.check(
            blobs=blobs,
            batch_size=batch_size,
            concurrency=concurrency,
            source=source,
            max_buffered_chunks=max_buffered_chunks,
            prefetch_batches=prefetch_batches,
            executor=executor,
            init_fun=init_fun,
            rebatch=rebatch,
            drop_last=drop_last,
            max_errors=max_errors,
            log_interval=log_interval,
            external_loggers=external_loggers,
        )
        procs = ProcessOptions.check(
            fetch, options, processes=processes, start_method=start_method, worker_init=worker_init
        )
        self._setup(fetch, options, keys=None, sink=sink, procs=procs)

    @classmethod
    def from_keys(
        cls,
        keys: Keys,
        fetch_one: FetchOneFn,
        *,
        blobs: Sequence[str],
        batch_size: int,
        concurrency: int = 4,
        ordered: bool = False,
        shard: tuple[int, int] | None = None,
        drop_last: bool = False,
        source: str = "keys",
        max_buffered_chunks: int = 800,
        prefetch_batches: int = 2,
        executor: Executor | None = None,
        init_fun: Callable[[Feed], Any] | None = None,
        rebatch: bool = True,
        max_errors: int | None = None,
        log_interval: float | None = 60.0,
        external_loggers: Sequence[ExternalLogger] = (),
        sink: Sink | None = None,
        processes: int | None = None,
        start_method: str | None = None,
        worker_init: Callable[[int], Any] | None = None,
    ) -> Feed:
        """A finite (or endless) feed over ``keys``: ``fetch_one(key)`` returns one chunk.

        ``keys`` is an iterable or async iterable. ``ordered=True`` delivers rows in key
        order, holding at most ``concurrency`` finished chunks for reordering.
        ``shard=(rank, world_size)`` takes every ``world_size``-th key from ``rank``. After
        the last key the final partial batch is delivered (or dropped with ``drop_last``)
        and iteration ends. A keyed feed's chunk queue is its own, never shared. With
        ``processes=N`` this process still iterates, shards and orders the keys, and hands
        each to a worker process; keys must then be picklable.

        Raises:
            ConfigError: for any invalid argument.
        """
        if not isinstance(ordered, bool):
            raise ConfigError(f"ordered must be a bool, got {ordered!r}")
        options = FeedOptions.check(
            blobs=blobs,
            batch_size=batch_size,
            concurrency=concurrency,
            source=source,
            max_buffered_chunks=max_buffered_chunks,
            prefetch_batches=prefetch_batches,
            executor=executor,
            init_fun=init_fun,
            rebatch=rebatch,
            drop_last=drop_last,
            max_errors=max_errors,
            log_interval=log_interval,
            external_loggers=external_loggers,
        )
        procs = ProcessOptions.check(
            fetch_one,
            options,
            processes=processes,
            start_method=start_method,
            worker_init=worker_init,
        )
        feed = cls.__new__(cls)
        feed._setup(
            fetch_one, options, keys=(keys, ordered, check_shard(shard)), sink=sink, procs=procs
        )
        return feed

    def _setup(
        self,
        fn: Callable[..., Any],
        options: FeedOptions,
        keys: tuple[Keys, bool, tuple[int, int]] | None,
        sink: Sink | None,
        procs: ProcessOptions | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"the fetcher must be callable, got {fn!r}")
        self._fn = fn
        self._opts = options
        self._keys = keys
        self._procs = procs
        self._pool: WorkerPool | None = None
        self._state = FeedState.NEW
        self._lock = threading.Lock()
        self.worker_ids: tuple[int, ...] = (
            tuple(next_worker_id() for _ in range(options.concurrency)) if keys is None else ()
        )
        self._counters = FeedCounters()
        self._stage: RebatchStage | None = None
        self._batches: Channel[Batch] = Channel(options.prefetch_batches)
        self._lag = LagWarning(options.source)
        self._own_pool: DaemonThreadPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sq: SourceQueue | None = None
        self._runner: asyncio.Task[None] | None = None
        self._portal: LoopThread | None = None
        self._error: BaseException | None = None
        self._error_seen = False
        self._stop_requested = False
        self._resources = contextlib.AsyncExitStack()
        self._finished = False
        self._stopping: concurrent.futures.Future[None] | None = None
        self._getters: set[concurrent.futures.Future[Batch]] = set()  # get() calls waiting
        self._stop_cause = DropCause.STOP
        self._bridge = (
            None
            if sink is None
            else SinkBridge(
                check_sink(sink),
                name=f"asyncfeed-{options.source}-sink",
                on_delivered=self._counters.delivered,
            )
        )

    # -- properties ---------------------------------------------------------------------------

    @property
    def state(self) -> FeedState:
        return self._state

    @property
    def blobs(self) -> tuple[str, ...]:
        return self._opts.blobs

    @property
    def batch_size(self) -> int:
        return self._opts.batch_size

    @property
    def source(self) -> str:
        return self._opts.source

    @property
    def concurrency(self) -> int:
        return self._opts.concurrency

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the feed, or None; reading it does not count as seeing it."""
        return self._error

    def __repr__(self) -> str:
        kind = "keyed" if self._keys is not None else "seed"
        return (
            f"<Feed {kind} source={self.source!r} blobs={list(self.blobs)} "
            f"batch_size={self.batch_size} state={self._state.value}>"
        )

    # -- lifecycle on the caller's loop --------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: object
    ) -> None:
        try:
            await self.aclose()
        except AsyncFeedError:
            if et is None:
                raise
            log.warning("feed %r also failed while the consumer raised", self, exc_info=True)

    def _open(self) -> None:
        """Start the runner task on the running loop (NEW → RUNNING)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._state is not FeedState.NEW:
                raise FeedStateError(
                    f"a feed starts once; this one is {self._state.value} (create a new Feed)"
                )
            self._state = FeedState.RUNNING
            self._loop = loop  # from here on, stop() goes through the loop
        try:
            self._sq = attach_source(
                self._opts.source,
                self._opts.blobs,
                self._opts.max_buffered_chunks,
                shared=self._keys is None,
            )
        except BaseException:
            self._state = FeedState.STOPPED
            self._loop = None
            raise
        self._stage = RebatchStage(
            self._sq.channel,
            self._batches,
            Rebatcher(
                self._opts.blobs,
                self._opts.batch_size,
                rebatch=self._opts.rebatch,
                allocate=None if self._bridge is None else allocator_of(self._bridge.sink),
            ),
            self._sq.ledger,
            drop_last=self._opts.drop_last,
            on_starved=self._on_starved,
        )
        self._runner = loop.create_task(self._run(), name=f"asyncfeed-{self.source}-runner")

    async def aclose(self, *, timeout: float = 5.0) -> None:
        """Stop the feed and wait for it, within ``timeout`` seconds. Idempotent.

        Rows in flight are counted as dropped. Sync fetchers stuck in a call are abandoned.
        Cancelling the caller meanwhile does not cut the stop short: the feed still stops
        (within ``timeout``), then the cancellation goes on.

        Raises:
            FeedTimeoutError: the feed's tasks did not end within ``timeout``.
            AsyncFeedError: the error that stopped the feed, if the consumer has not seen it.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state is FeedState.NEW:
                self._state = FeedState.STOPPED
                self._close_sink(DropCause.STOP)
                return
            if self._state is FeedState.RUNNING:
                self._state = FeedState.STOPPING
                self._stop_requested = True
                assert self._runner is not None
                self._runner.cancel()
        runner = self._runner
        cancelled: asyncio.CancelledError | None = None
        if runner is not None and not runner.done():
            cancelled = await _wait_through_cancel(runner, deadline)
            if not runner.done():
                if cancelled is not None:
                    raise cancelled
                raise FeedTimeoutError(
                    f"feed {self.source!r} did not stop within {timeout} s; a fetcher may be "
                    "swallowing cancellation or blocking the event loop"
                )
        if self._state is not FeedState.STOPPED:
            self._finish()  # no-op unless the runner was cancelled before its first step
            self._drop_batches(DropCause.STOP)
            self._stopped()
            stop_at_exit(self, enabled=False)
            pool = self._own_pool
            if pool is not None:
                remaining = max(0.0, deadline - time.monotonic())
                await to_thread(pool.join, remaining, name=f"asyncfeed-{self.source}-join")
            if self._bridge is not None:
                remaining = max(0.0, deadline - time.monotonic())
                await self._bridge.wait_ended(remaining)
        if cancelled is not None:
            raise cancelled
        self._raise_unseen()

    def _raise_unseen(self) -> None:
        if self._error is not None and not self._error_seen:
            self._error_seen = True
            raise self._error

    def _check_no_sink(self) -> None:
        if self._bridge is not None:
            raise FeedStateError(
                f"this feed hands its batches to the sink {self._bridge.sink!r}; "
                "read them from the sink, not from the feed"
            )

    # -- consumption on the caller's loop ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self

    async def __anext__(self) -> Batch:
        self._check_no_sink()
        if self._loop is None:
            raise FeedStateError("the feed is not started; use 'async with feed:' first")
        if asyncio.get_running_loop() is not self._loop:
            raise FeedStateError(
                "the feed runs on another event loop; use feed.get() from this thread"
            )
        batches = self._batches
        try:
            batch = await batches.get()  # returns at once when a batch is ready
        except ChannelClosed:
            self._raise_end()
        self._delivered(batch)
        return batch

    def _raise_end(self) -> Any:
        if self._error is not None:
            self._error_seen = True
            raise self._error
        raise StopAsyncIteration

    def _delivered(self, batch: Batch) -> None:
        assert self._sq is not None
        self._sq.ledger.deliver(batch.rows, Stage.BATCHED)
        self._counters.delivered(batch.rows)

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task on the feed's loop (the blocking face's getters)."""
        assert self._loop is not None
        return self._loop.create_task(coro, name=f"asyncfeed-{self.source}-{what}")

    # -- the runner ----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._sq is not None and self._stage is not None
        try:
            if self._procs is None:  # with processes=N the workers open it, lazily
                await open_fetcher(self._fn, self, self._resources)
            if self._opts.init_fun is not None:
                await self._call_init(self._opts.init_fun)
            async with asyncio.TaskGroup() as tg:
                services = self._start_producers(tg)  # run until the stage ends
                last = tg.create_task(self._stage.run(), name=f"asyncfeed-{self.source}-rebatch")
                if self._bridge is not None:
                    last = tg.create_task(
                        self._bridge.run(self._batches, self._sq.ledger, self._on_sink_closed),
                        name=f"asyncfeed-{self.source}-sink",
                    )
                if self._opts.log_interval is not None:
                    services.append(
                        tg.create_task(
                            log_every(
                                self._opts.log_interval, self.stats, self._opts.external_loggers
                            )
                        )
                    )
                await asyncio.wait({last})
                for service in services:
                    service.cancel()
        except asyncio.CancelledError:
            if not self._stop_requested:
                self._fail(FeedStateError(f"feed {self.source!r} was cancelled by its event loop"))
            raise
        except BaseExceptionGroup as group:
            self._fail(first_error(group))
        except Exception as exc:
            self._fail(exc)
        finally:
            try:
                await self._resources.aclose()  # the fetcher's session, pools: never raises
            finally:
                self._finish()

    async def _call_init(self, init_fun: Callable[[Feed], Any]) -> None:
        try:
            if is_async_callable(init_fun):
                await init_fun(self)
            else:
                await to_thread(init_fun, self, name=f"asyncfeed-{self.source}-init")
        except Exception as exc:
            raise FetchError(f"init_fun {init_fun!r} failed: {type(exc).__name__}: {exc}") from exc

    def _start_producers(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Create the fetch tasks; return the service tasks to cancel once the stage ends."""
        assert self._sq is not None
        opts = self._opts
        executor = opts.executor
        fn = self._fn
        services: list[asyncio.Task[None]] = []
        if self._procs is not None:  # fetch calls go to worker processes
            pool = self._pool = WorkerPool(
                self._procs, source=opts.source, worker_ids=self.worker_ids
            )
            services.append(tg.create_task(pool.run(), name=f"asyncfeed-{opts.source}-procs"))
            fn = pool.fetch if self._keys is None else pool.fetch_one
        elif executor is None and not is_async_callable(fn):
            executor = self._own_pool = DaemonThreadPool(
                opts.concurrency, f"asyncfeed-{opts.source}-fetch"
            )
        fetcher = Fetcher(
            fn,
            schema=self._sq.schema,
            ledger=self._sq.ledger,
            chunks=self._sq.channel,
            counters=self._counters,
            executor=executor,
            on_error=ErrorBudget(opts.max_errors, self._counters),
            stop_cause=self._held_rows_cause,
            pump_ahead=pump_ahead(opts.max_buffered_chunks, opts.concurrency),
        )
        if self._keys is None:
            for wid in self.worker_ids:
                tg.create_task(
                    fetcher.run_seed_worker(wid, opts.batch_size),
                    name=f"asyncfeed-{opts.source}-worker-{wid}",
                )
            return services
        keys, ordered, shard = self._keys
        key_channel: Channel[tuple[int, Any]] = Channel(opts.concurrency)
        reorder = Reorderer() if ordered else None
        live = [opts.concurrency]

        async def key_worker() -> None:
            await fetcher.run_key_worker(key_channel, reorder)
            live[0] -= 1
            if live[0] == 0:
                assert self._sq is not None
                self._sq.channel.close()  # end of data: the rebatch stage flushes and ends

        tg.create_task(
            dispatch_keys(keys, shard, key_channel), name=f"asyncfeed-{opts.source}-keys"
        )
        for i in range(opts.concurrency):
            tg.create_task(key_worker(), name=f"asyncfeed-{opts.source}-worker-{i}")
        return services

    def _held_rows_cause(self) -> DropCause:
        """Why rows held by a cancelled stage are dropped: a requested stop, or a failure."""
        return self._stop_cause if self._stop_requested else DropCause.ERROR

    def _on_starved(self) -> None:
        """The rebatch stage found the chunk queue empty: warn if the consumer waits too."""
        if not self._batches and self._counters.batches_delivered and self._sq is not None:
            self._lag.check(0, self._sq.channel.maxsize)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            log.debug("feed %r stopping on %r", self, exc)

    def _finish(self) -> None:
        """Runner cleanup: account for every row still held, close channels, leave the source.

        Runs once: at the end of the runner, or from ``aclose()`` when the runner was
        cancelled before it ever ran.
        """
        sq = self._sq
        assert sq is not None
        if self._finished:
            return
        self._finished = True
        cause = DropCause.ERROR if self._error is not None else self._stop_cause
        self._close_sink(cause)
        if self._stage is not None:
            self._stage.discard(cause)
        if self._error is not None or self._stop_requested:
            self._drop_batches(cause)
        self._batches.close()
        if detach_source(sq):
            sq.channel.close()
            for _, rows, _ in sq.channel.drain():
                sq.ledger.drop(rows, Stage.QUEUED, cause)
        if self._own_pool is not None:
            self._own_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            if self._state is FeedState.RUNNING:
                self._state = FeedState.STOPPING  # ended on its own: aclose() completes it

    def _on_sink_closed(self) -> None:
        """The sink's reader closed it: stop as ``aclose()`` would, rows counted as sink_closed."""
        log.info("feed %r stopping: its sink was closed", self)
        self._stop_requested = True
        self._stop_cause = DropCause.SINK_CLOSED
        assert self._runner is not None
        self._runner.cancel()

    def _close_sink(self, cause: DropCause) -> None:
        if self._bridge is not None:
            self._bridge.shutdown(cause)

    def _drop_batches(self, cause: DropCause) -> None:
        if self._sq is None:
            return
        for batch in self._batches.drain():
            self._sq.ledger.drop(batch.rows, Stage.BATCHED, cause)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> FeedStats:
        """A consistent snapshot; callable from any thread, in any state."""
        sq = self._sq
        return self._counters.snapshot(
            source=self.source,
            state=self._state.value,
            ledger=None if sq is None else sq.ledger,
            chunk_queue_depth=0 if sq is None else len(sq.channel),
            batch_queue_depth=len(self._batches),
            hosts=(
                self._pool.host_stats() if self._pool is not None else fetcher_host_stats(self._fn)
            ),
        )

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        state = getattr(self, "_state", FeedState.STOPPED)
        if state in (FeedState.RUNNING, FeedState.STOPPING):
            _warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)


async def _wait_through_cancel(
    task: asyncio.Task[None], deadline: float
) -> asyncio.CancelledError | None:
    """Wait for ``task`` until ``deadline``, even when cancelled meanwhile.

    A feed that is stopping finishes stopping first; the cancellation is returned for the
    caller to re-raise once it has (None when there was none).
    """
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError as exc:
            cancelled = exc
    return cancelled
