"""A feed's run: everything that lives only while the feed runs, and the only creator of tasks.

:class:`Run` is made when a feed opens, on the loop it runs on. It owns the source queue, the
rebatch stage, the sink bridge, the worker backend (and so the pools and worker processes),
the one ``TaskGroup``, the fetcher's resources, the first error and the final accounting.
``Feed`` is its facade; ``blocking.py`` reaches it from other threads. The run never holds
its feed, so a feed the user forgets is collected (and its run stopped, see ``Feed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Final, final

from .adapt import Controller
from .attribution import SinkWatch, Waits
from .backend import WorkerBackend, make_backend
from .batch import Batch
from .budget import ErrorBudget
from .checkpoint import Tracker
from .errors import FeedExhausted, FeedStateError, FeedTimeoutError, first_error
from .fetch import Fetcher, key_workers, seed_workers
from .gate import Gate, GatedBackend
from .handoff import SinkBridge
from .keysource import KeyItem, KeySource
from .observe import probe_for, snapshot
from .options import RunSpec
from .queues import Channel, ChannelClosed, attach_source, detach_source
from .rebatch import Rebatcher
from .resources import call_init, open_fetcher
from .sinks import WatchedSink, allocator_of
from .stages import RebatchStage, log_every
from .state import Lifecycle, wait_through_cancel
from .stats import DropCause, FeedCounters, FeedStats, LagWarning, Stage

if TYPE_CHECKING:
    from .feed import Feed

__all__ = ["DEFAULT_STOP_TIMEOUT", "Run"]

log = logging.getLogger("asyncfeed.feed")

#: Seconds a run that ends on its own (an error, the end of the keys) gives its backend and
#: resources to stop.
DEFAULT_STOP_TIMEOUT: Final = 5.0
#: The runner's own cleanup ends this long before the stop's deadline, so the stop sees it.
CLEANUP_MARGIN: Final = 0.05


@final
class Run:
    """One run of a feed, on the running loop. Create, then :meth:`start`.

    Raises:
        ConfigError: another feed of the same source on this loop uses other blobs or
            queue size.
    """

    def __init__(self, spec: RunSpec, life: Lifecycle, tracker: Tracker | None = None) -> None:
        opts = spec.options
        self.spec: Final = spec
        self.loop: Final = asyncio.get_running_loop()
        self._life: Final = life
        self.counters: Final = FeedCounters()
        self.sq: Final = attach_source(
            opts.source, opts.blobs, opts.max_buffered_chunks, shared=spec.keys is None
        )
        self.batches: Final[Channel[Batch]] = Channel(opts.prefetch_batches)
        self.tracker: Final = tracker
        sink = opts.sink
        self.bridge: Final = (
            None
            if sink is None
            else SinkBridge(
                sink,
                name=f"asyncfeed-{opts.source}-sink",
                on_delivered=self.counters.delivered,
                on_received=None if tracker is None else tracker.received,
            )
        )
        first, size, sizes = (0, opts.batch_size, []) if tracker is None else tracker.rebatching()
        self.rebatcher: Final = Rebatcher(
            opts.blobs,
            size,
            rebatch=opts.rebatch,
            allocate=None if sink is None else allocator_of(sink),
            track=tracker is not None,
            first_index=first,
            sizes=sizes,
        )
        #: Rows of the batch being made (the hint seed-style fetchers are given, per call).
        self.batch_size: Final[Callable[[], int]] = partial(getattr, self.rebatcher, "batch_size")
        self.stage: Final = RebatchStage(
            self.sq.channel,
            self.batches,
            self.rebatcher,
            self.sq.ledger,
            drop_last=opts.drop_last,
            on_starved=self._on_starved,
            on_dropped=None if tracker is None else tracker.dropped,
        )
        self._budget: Final = ErrorBudget(opts.max_errors, self.counters)
        self.fetcher: Final = Fetcher(
            schema=self.sq.schema,
            ledger=self.sq.ledger,
            chunks=self.sq.channel,
            counters=self.counters,
            on_error=self._budget,
            stop_cause=self._held_rows_cause,
        )
        adaptive = opts.adaptive
        self.gate: Final = None if adaptive is None else Gate(adaptive.initial)
        backend = make_backend(spec, on_late=self.fetcher.drop_late)
        self.backend: Final[WorkerBackend] = (
            backend if self.gate is None else GatedBackend(backend, self.gate)
        )
        load = getattr(spec.fn, "load", None) if backend.opens_fetcher else None  # it runs here
        self.load: Final = load if callable(load) else None  # decodes queued, requests held
        self._lag: Final = LagWarning(opts.source)
        self.limit = opts.max_concurrency if adaptive is None else adaptive.initial
        self.limit_reason = "fixed" if adaptive is None else "start"  # why self.limit is so
        self.key_channel: Channel[KeyItem] | None = None
        self.waits: Final = Waits()
        self.probe: Final = probe_for(self)
        self.controller: Final = (
            None if self.gate is None or adaptive is None else Controller(self, self.gate, adaptive)
        )
        if isinstance(sink, WatchedSink):
            receipts = None if self.bridge is None else self.bridge.receipts
            taken = None if receipts is None else receipts.taken
            sink.watch(SinkWatch(self.waits, self.probe, taken))
        self._resources: Final = contextlib.AsyncExitStack()
        self.error: BaseException | None = None
        self.error_seen = False
        self._stop_requested = False
        self._stop_cause = DropCause.STOP
        self._deadline: float | None = None
        self._finished = False
        self._closed = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def source(self) -> str:
        return self.spec.options.source

    def inflight(self) -> int:
        """Fetch calls running now (an adaptive feed's workers waiting at its gate are not)."""
        return self.counters.inflight if self.gate is None else self.gate.inflight

    def set_batch_size(self, batch_size: int) -> None:
        """On the loop: batches from the next one started on have ``batch_size`` rows."""
        start = self.rebatcher.set_batch_size(batch_size)
        if self.tracker is not None:
            self.tracker.resized(batch_size, start)

    def start(self, feed: Feed) -> None:
        """Start the runner task; ``feed`` is handed to ``open()`` and ``init_fun`` only."""
        self._runner = self._task(self._main(feed), "runner")

    def _task(
        self,
        coro: Coroutine[Any, Any, None],
        what: str,
        tg: asyncio.TaskGroup | None = None,
    ) -> asyncio.Task[None]:
        """The one place tasks are made (in the run's TaskGroup, or on its loop)."""
        name = f"asyncfeed-{self.source}-{what}"
        if tg is not None:
            return tg.create_task(coro, name=name)
        return self.loop.create_task(coro, name=name)

    # -- the runner ----------------------------------------------------------------------------

    async def _main(self, feed: Feed) -> None:
        opts = self.spec.options
        try:
            try:
                if self.backend.opens_fetcher:
                    await open_fetcher(self.spec.fn, feed, self._resources)
                if opts.init_fun is not None:
                    await call_init(opts.init_fun, feed, self.source)
            finally:
                del feed  # the run never keeps its feed alive
            await self.backend.start()
            async with asyncio.TaskGroup() as tg:
                services = [self._task(self.backend.watch(), "watch", tg)]
                self._start_workers(tg)
                last = self._task(self.stage.run(), "rebatch", tg)
                if self.bridge is not None:
                    stage = self.bridge.run(self.batches, self.sq.ledger, self._on_sink_closed)
                    last = self._task(stage, "sink", tg)
                if opts.log_interval is not None:
                    logger = log_every(opts.log_interval, self.stats_now, opts.external_loggers)
                    services.append(self._task(logger, "log", tg))
                if self.controller is not None:
                    services.append(self._task(self.controller.run(), "adapt", tg))
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
                await self._cleanup(self._stop_deadline() - CLEANUP_MARGIN)
            finally:
                self._finish()

    def _start_workers(self, tg: asyncio.TaskGroup) -> None:
        spec = self.spec
        if spec.keys is None:
            workers = seed_workers(self.fetcher, self.backend, spec.worker_ids, self.batch_size)
        else:
            assert self.tracker is not None
            source = KeySource(spec.keys, self.tracker, self.sq.channel, spec.sizing.key_buffer)
            self.key_channel = source.channel
            workers = key_workers(
                self.fetcher, self.backend, source, self.tracker, spec.sizing.workers
            )
        for name, worker in workers:
            self._task(worker, name, tg)

    async def _cleanup(self, deadline: float) -> None:
        """Stop the backend and close the fetcher's resources, by ``deadline``."""
        await self.backend.stop(deadline)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._resources.aclose()  # the fetcher's session, pools: never raises
        except TimeoutError:
            log.warning("feed %r: closing the fetcher's resources timed out", self.source)

    def _stop_deadline(self) -> float:
        if self._deadline is not None:
            return self._deadline
        return time.monotonic() + DEFAULT_STOP_TIMEOUT

    def _held_rows_cause(self) -> DropCause:
        """Why rows held by a cancelled stage are dropped: a requested stop, or a failure."""
        return self._stop_cause if self._stop_requested else DropCause.ERROR

    def _on_starved(self) -> None:
        """The rebatch stage found the chunk queue empty: warn if the consumer waits too."""
        if not self.batches and self.counters.batches_delivered:
            self._lag.check(0, self.sq.channel.maxsize)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            log.debug("feed %r stopping on %r", self.source, exc)

    def _on_sink_closed(self) -> None:
        """The sink's reader closed it: stop as a stop would, rows counted as sink_closed."""
        log.info("feed %r stopping: its sink was closed", self.source)
        self._stop_requested = True
        self._stop_cause = DropCause.SINK_CLOSED
        assert self._runner is not None
        self._runner.cancel()

    def _finish(self) -> None:
        """Account for every row still held, close channels, leave the source. Runs once."""
        if self._finished:
            return
        self._finished = True
        self._budget.flush_log()
        cause = DropCause.ERROR if self.error is not None else self._stop_cause
        if self.bridge is not None:
            self.bridge.shutdown(cause)
            if isinstance(self.bridge.sink, WatchedSink):
                self.bridge.sink.watch(None)
        self.stage.discard(cause)
        if self.error is not None or self._stop_requested:
            self._drop_batches(cause)
        self.batches.close()
        sq = self.sq
        if detach_source(sq):
            sq.channel.close()
            for _, rows, _ in sq.channel.drain():
                sq.ledger.drop(rows, Stage.QUEUED, cause)
        self._life.ended()

    def _drop_batches(self, cause: DropCause) -> None:
        for batch in self.batches.drain():
            self.sq.ledger.drop(batch.rows, Stage.BATCHED, cause)

    # -- stopping ------------------------------------------------------------------------------

    def abandon(self) -> None:
        """On the loop: the feed was forgotten while running; stop it (default deadline)."""
        runner = self._runner
        if runner is not None and not runner.done() and not self._stop_requested:
            self._stop_requested = True
            runner.cancel()

    async def stop(self, deadline: float, timeout: float) -> asyncio.CancelledError | None:
        """Stop the run and wait for it, until ``deadline`` (``time.monotonic()``, ``timeout``
        seconds after the stop began). Idempotent.

        Cancelling the caller meanwhile does not cut the stop short: it still completes
        (by the deadline), and the cancellation is returned for the caller to re-raise once
        it has recorded the stop.

        Raises:
            FeedTimeoutError: the run's tasks did not end by the deadline.
            CancelledError: the caller was cancelled and the run did not end by the deadline.
        """
        runner = self._runner
        if runner is not None and not runner.done() and not self._stop_requested:
            self._stop_requested = True
            self._deadline = deadline
            runner.cancel()
        cancelled: asyncio.CancelledError | None = None
        if runner is not None and not runner.done():
            cancelled = await wait_through_cancel(runner, deadline)
            if not runner.done():
                if cancelled is not None:
                    raise cancelled
                raise FeedTimeoutError(
                    f"feed {self.source!r} did not stop within {timeout:g} s; a fetcher may "
                    "be swallowing cancellation or blocking the event loop"
                )
        if not self._closed:
            self._closed = True
            self._finish()  # no-op unless the runner was cancelled before its first step
            self._drop_batches(DropCause.STOP)
            if self.bridge is not None:
                await self.bridge.wait_ended(max(0.0, deadline - time.monotonic()))
        return cancelled

    def raise_unseen(self) -> None:
        """Raise the error that stopped the run if the consumer has not seen it yet."""
        if self.error is not None and not self.error_seen:
            self.error_seen = True
            raise self.error

    # -- consumption ---------------------------------------------------------------------------

    async def next_batch(self) -> Batch:
        """The next batch, on the run's loop.

        Raises:
            StopAsyncIteration: a finite feed delivered its last batch, or it was stopped.
            AsyncFeedError: the error that stopped the run.
        """
        self.waits.asked()
        try:
            try:
                batch: Batch | None = self.batches.get_nowait()
            except asyncio.QueueEmpty:
                cause, start = self.probe.cause(), time.perf_counter()
                batch = await self.batches.get()
                self.waits.add(cause, time.perf_counter() - start)
        except ChannelClosed:
            batch = None
        if batch is None:
            if self.error is not None:
                self.error_seen = True
                raise self.error
            raise StopAsyncIteration
        self.delivered(batch)
        return batch

    def delivered(self, batch: Batch) -> None:
        """Count a batch the consumer received."""
        self.sq.ledger.deliver(batch.rows, Stage.BATCHED)
        self.counters.delivered(batch.rows)
        if batch.provenance is not None and self.tracker is not None:
            self.tracker.received(batch.provenance, batch.rows)

    def end_error(self) -> BaseException:
        """What a ``get()`` after the last batch raises: the error, or ``FeedExhausted``."""
        if self.error is not None:
            self.error_seen = True
            return self.error
        if self._stop_requested and self._stop_cause is DropCause.STOP:
            return FeedExhausted(f"feed {self.source!r} was stopped")
        return FeedExhausted(f"feed {self.source!r} delivered its last batch")

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task on the run's loop (the blocking face's waiting getters)."""
        return self._task(coro, what)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, state: str) -> FeedStats:
        """A consistent snapshot; callable from any thread."""
        return snapshot(self, state)

    def stats_now(self) -> FeedStats:
        return self.stats(self._life.state.value)
