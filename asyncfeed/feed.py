"""``Feed``: the facade of a streaming input pipeline.

``Feed`` keeps the configuration (one option list for both constructors, ``options.py``),
its properties and the lifecycle (``state.Lifecycle``). Everything that lives only while the
feed runs — the queues, stages, pools, worker processes and tasks — belongs to a private
``run.Run`` made when the feed opens; the synchronous face is ``blocking.SyncFace``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Final, Self, Unpack, cast, final

from .blocking import SyncFace
from .bridge import stop_at_exit
from .errors import AsyncFeedError, ConfigError, FeedExhausted, FeedStateError
from .fetch import next_worker_id
from .keys import Keys, KeySpec, Shard
from .options import FeedKwargs, FeedOptions
from .protocols import FetchFn, FetchOneFn, is_async_callable
from .rebatch import Batch
from .run import Run, RunSpec
from .sizing import plan
from .state import FeedState, Lifecycle
from .stats import FeedCounters, FeedStats

__all__ = ["Feed", "FeedState"]

log = logging.getLogger("asyncfeed.feed")


@final
class _Keyed:
    """What ``from_keys`` hands ``__init__``: the keyed fetcher and its keys."""

    __slots__ = ("fn", "spec")

    def __init__(self, fn: FetchOneFn, spec: KeySpec) -> None:
        self.fn: Final = fn
        self.spec: Final = spec


@final
class Feed:
    """A streaming input pipeline: fetchers → bounded chunk queue → rebatcher → batches.

    Args:
        fetch: ``fetch(worker_id, batch_size)`` returning a chunk (a list of arrays, one per
            blob, or a mapping blob → array) or None for "nothing this time" (called again
            after a short backoff). ``async def`` fetchers run on the feed's loop; plain
            functions on threads (see ``executor``).
        blobs: blob names, in the order chunks hold their arrays.
        batch_size: rows per batch (also passed to ``fetch`` as a hint).
        **options: ``concurrency``, ``source``, ``max_buffered_chunks``,
            ``prefetch_batches``, ``executor``, ``init_fun``, ``rebatch``, ``drop_last``,
            ``max_errors``, ``log_interval``, ``external_loggers``, ``sink``, ``workers``
            (or its shorthand ``processes``, ``start_method``, ``worker_init``); each is
            described, with its default, in :class:`~asyncfeed.options.FeedOptions`.

    Consume with ``async with feed: async for batch in feed: ...`` on the caller's loop, or
    ``with feed: for batch in feed: ...`` (``start()``, ``get()``, ``stop()``) from
    synchronous code; the feed then runs on a private loop thread. A feed made with
    ``sink=`` is read from its sink instead.

    Raises:
        ConfigError: at construction, for any invalid argument.
    """

    def __init__(
        self,
        fetch: FetchFn,
        *,
        blobs: Sequence[str],
        batch_size: int,
        **options: Unpack[FeedKwargs],
    ) -> None:
        raw: object = fetch
        keyed = raw if isinstance(raw, _Keyed) else None
        fn: Callable[..., Any] = fetch if keyed is None else keyed.fn
        if not callable(fn):
            raise ConfigError(f"the fetcher must be callable, got {fn!r}")
        opts = FeedOptions.check(
            blobs=blobs, batch_size=batch_size, keyed=keyed is not None, **options
        )
        workers = opts.workers
        sizing = plan(
            opts.concurrency,
            opts.max_buffered_chunks,
            own_threads=opts.executor is None and not is_async_callable(fn),
            processes=None if workers is None else workers.n,
        )
        self.worker_ids: Final[tuple[int, ...]] = (
            tuple(next_worker_id() for _ in range(opts.concurrency)) if keyed is None else ()
        )
        self._spec: Final = RunSpec(
            fn=fn,
            options=opts,
            keys=None if keyed is None else keyed.spec,
            worker_ids=self.worker_ids,
            sizing=sizing,
            process_spec=(
                None
                if workers is None
                else workers.spec(fn, threads=sizing.per_process, source=opts.source)
            ),
        )
        self._life: Final = Lifecycle()
        self._sync: Final = SyncFace()
        self._run: Run | None = None
        self._finalizer: weakref.finalize[Any, Feed] | None = None

    @classmethod
    def from_keys(
        cls,
        keys: Keys,
        fetch_one: FetchOneFn,
        *,
        blobs: Sequence[str],
        batch_size: int,
        ordered: bool = False,
        shard: Shard = None,
        **options: Unpack[FeedKwargs],
    ) -> Feed:
        """A finite (or endless) feed over ``keys``: ``fetch_one(key)`` returns one chunk.

        ``keys`` is an iterable or async iterable. ``ordered=True`` delivers rows in key
        order, holding at most ``concurrency`` finished chunks for reordering.
        ``shard=(rank, world_size)`` takes every ``world_size``-th key from ``rank``;
        ``shard="auto"`` takes the pair from an initialised ``torch.distributed`` group,
        else from ``RANK`` / ``WORLD_SIZE``, else one rank (``keys.auto_shard``). After
        the last key the final partial batch is delivered (or dropped with ``drop_last``)
        and iteration ends. A keyed feed's chunk queue is its own (``source`` defaults to
        ``"keys"``). With worker processes this process still iterates, shards and orders
        the keys, and hands each to a worker; keys must then be picklable. The other
        options are :class:`Feed`'s.

        Raises:
            ConfigError: for any invalid argument.
        """
        spec = KeySpec.check(keys, ordered=ordered, shard=shard)
        keyed = cast(FetchFn, _Keyed(fetch_one, spec))
        return cls(keyed, blobs=blobs, batch_size=batch_size, **options)

    # -- properties ---------------------------------------------------------------------------

    @property
    def state(self) -> FeedState:
        return self._life.state

    @property
    def options(self) -> FeedOptions:
        """The validated options, defaults filled in."""
        return self._spec.options

    @property
    def blobs(self) -> tuple[str, ...]:
        return self._spec.options.blobs

    @property
    def batch_size(self) -> int:
        return self._spec.options.batch_size

    @property
    def source(self) -> str:
        return self._spec.options.source

    @property
    def concurrency(self) -> int:
        return self._spec.options.concurrency

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the feed, or None; reading it does not count as seeing it."""
        return None if self._run is None else self._run.error

    def __repr__(self) -> str:
        kind = "keyed" if self._spec.keys is not None else "seed"
        return (
            f"<Feed {kind} source={self.source!r} blobs={list(self.blobs)} "
            f"batch_size={self.batch_size} state={self.state.value}>"
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
        """On the loop that will run the feed: NEW → RUNNING, make and start the run.

        Raises:
            FeedStateError: the feed was started or stopped before.
            ConfigError: another feed of the same source uses other blobs or queue size.
        """
        self._life.start()
        try:
            run = Run(self._spec, self._life)
        except BaseException:
            self._life.stopped()
            raise
        self._run = run
        self._life.on_stopped(functools.partial(self._sync.answer_waiting, run))
        self._finalizer = weakref.finalize(self, _forgotten, run, self._life, repr(self))
        run.start(self)

    async def aclose(self, *, timeout: float = 5.0) -> None:
        """Stop the feed and wait for it, within ``timeout`` seconds. Idempotent.

        Rows in flight are counted as dropped. Sync fetchers stuck in a call are abandoned;
        worker processes that ignore the stop are terminated, then killed, in time.
        Cancelling the caller meanwhile does not cut the stop short: the feed still stops
        (within ``timeout``), then the cancellation goes on.

        Raises:
            FeedTimeoutError: the feed's tasks did not end within ``timeout`` (a fetcher
                swallows cancellation or blocks the event loop).
            AsyncFeedError: the error that stopped the feed, if the consumer has not seen it.
        """
        await self._aclose_by(time.monotonic() + timeout, timeout)

    async def _aclose_by(self, deadline: float, timeout: float) -> None:
        if self._life.begin_stop() is FeedState.NEW:
            self._close_unstarted_sink()
            return
        run = self._run
        cancelled = None if run is None else await run.stop(deadline, timeout)
        self._life.stopped()
        stop_at_exit(self, enabled=False)
        if self._finalizer is not None:
            self._finalizer.detach()
        if cancelled is not None:
            raise cancelled
        self._raise_unseen()

    def _raise_unseen(self) -> None:
        if self._run is not None:
            self._run.raise_unseen()

    def _close_unstarted_sink(self) -> None:
        sink = self._spec.options.sink
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %r failed", sink)

    def _check_no_sink(self) -> None:
        sink = self._spec.options.sink
        if sink is not None:
            raise FeedStateError(
                f"this feed hands its batches to the sink {sink!r}; "
                "read them from the sink, not from the feed"
            )

    # -- consumption on the caller's loop ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self

    async def __anext__(self) -> Batch:
        self._check_no_sink()
        run = self._run
        if run is None:
            raise FeedStateError("the feed is not started; use 'async with feed:' first")
        _check_on_loop(run)
        return await run.next_batch()

    # -- the synchronous face ------------------------------------------------------------------

    def start(self, *, timeout: float = 30.0) -> None:
        """Run the feed on the process-wide private loop thread; returns once it runs.

        Raises:
            FeedStateError: the feed was already started or stopped.
            ConfigError: another feed of the same source uses other blobs or queue size.
        """
        if self.state is not FeedState.NEW:
            self._life.start()  # raises the lifecycle's exact message
        self._sync.start(self._open, timeout)
        stop_at_exit(self)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the feed from any thread other than its loop's, within ``timeout`` seconds.

        Safe in every state and idempotent.

        Raises:
            FeedTimeoutError: the feed did not stop in time (its loop is blocked, or a
                fetcher swallows cancellation).
            AsyncFeedError: the error that stopped the feed, if not yet seen by the consumer.
        """
        deadline = time.monotonic() + timeout
        if self._life.stop_if_new():
            self._close_unstarted_sink()
            return
        run = self._run
        loop = run.loop if run is not None else self._sync.portal_loop()
        self._sync.stop(loop, self._aclose_by, self._raise_unseen, deadline, timeout)

    def get(self, *, timeout: float | None = None) -> Batch:
        """The next batch, for a consumer thread other than the feed's loop.

        Raises:
            FeedTimeoutError: no batch within ``timeout`` seconds (nothing is lost).
            FeedExhausted: a finite feed delivered its last batch, or the feed was stopped.
            FeedStateError: the feed is not running.
            AsyncFeedError: the error that stopped the feed.
        """
        self._check_no_sink()
        return self._sync.get(self._run, self._life, timeout)

    def __iter__(self) -> Iterator[Batch]:
        """Iterate batches from a thread other than the feed's loop, until the feed ends."""
        while True:
            try:
                yield self.get()
            except FeedExhausted:
                return

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: object
    ) -> None:
        try:
            self.stop()
        except AsyncFeedError:
            if et is None:
                raise
            log.warning("feed %r also failed while the consumer raised", self, exc_info=True)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> FeedStats:
        """A consistent snapshot; callable from any thread, in any state."""
        run = self._run
        if run is not None:
            return run.stats(self.state.value)
        return FeedCounters().snapshot(
            source=self.source,
            state=self.state.value,
            ledger=None,
            chunk_queue_depth=0,
            batch_queue_depth=0,
            hosts={},
        )


def _check_on_loop(run: Run) -> None:
    if asyncio.get_running_loop() is not run.loop:
        raise FeedStateError("the feed runs on another event loop; use feed.get() from this thread")


def _forgotten(run: Run, life: Lifecycle, name: str) -> None:
    """A feed was collected while it ran: warn, and have its loop stop the run."""
    if life.state is FeedState.STOPPED:
        return
    warnings.warn(f"unclosed {name}", ResourceWarning, stacklevel=2)
    try:
        run.loop.call_soon_threadsafe(run.abandon)
    except RuntimeError:  # its loop is closed: nothing of it runs any more
        pass
