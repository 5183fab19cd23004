"""``Feed``: the facade of a streaming input pipeline.

``Feed`` keeps the configuration (one option list for both constructors, ``options.py``),
its properties and the lifecycle (``state.Lifecycle``). Everything that lives only while the
feed runs — the queues, stages, pools, worker processes and tasks — belongs to a private
``run.Run`` made when the feed opens; the synchronous face is ``blocking.SyncFace``.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Self, TextIO, Unpack, cast, final

from .adaptive.options import Adaptive
from .batch import Batch
from .blocking import SyncFace, check_on_loop, forgotten, on_loop
from .bridge import stop_at_exit
from .checkpoint import Tracker, merge_states
from .errors import AsyncFeedError, ConfigError, FeedExhausted, FeedStateError
from .keys import KeyedFetch, Keys, KeySpec, Shard
from .observe import unstarted
from .options import MAX_BATCH_SIZE, FeedKwargs, FeedOptions, RunSpec, check_positive_int
from .progress import Progress
from .protocols import FetchFn, FetchOneFn
from .run import Run
from .state import FeedState, Lifecycle
from .stats import FeedStats

__all__ = ["Feed", "FeedState"]

log = logging.getLogger("asyncfeed.feed")


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

    Raises ``ConfigError`` at construction for any invalid argument.
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
        keyed = raw if isinstance(raw, KeyedFetch) else None
        fn: Callable[..., Any] = fetch if keyed is None else keyed.fn
        if not callable(fn):
            raise ConfigError(f"the fetcher must be callable, got {fn!r}")
        opts = FeedOptions.check(
            blobs=blobs, batch_size=batch_size, keyed=keyed is not None, **options
        )
        self._spec: Final = RunSpec.make(fn, opts, None if keyed is None else keyed.spec)
        self.worker_ids: Final = self._spec.worker_ids
        self._life: Final = Lifecycle()
        self._sync: Final = SyncFace()
        self._run: Run | None = None
        self._tracker = None if keyed is None else Tracker(keyed.spec, batch_size=opts.batch_size)
        self._pending_size: int | None = None  # set_batch_size() of a seed feed not started
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
        epochs: int | None = 1,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int | None = None,
        state: Mapping[str, Any] | None = None,
        **options: Unpack[FeedKwargs],
    ) -> Feed:
        """A finite (or endless) feed over ``keys``: ``fetch_one(key)`` returns one chunk.

        ``keys``: a sequence, a callable returning a fresh (async) iterable per epoch, or a
        one-shot (async) iterable. ``epochs`` passes over them (None: forever); each epoch
        ends with its partial batch (dropped with ``drop_last``): batches never mix epochs.
        ``shuffle`` walks each epoch in its own order (seeded by ``seed`` and the epoch; a
        window of ``shuffle_buffer`` keys for iterables). ``ordered=True`` delivers rows in
        key order. ``shard=(rank, world_size)`` takes the positions of each epoch's order that
        are this rank's (``"auto"``: from ``torch.distributed``, else ``RANK`` /
        ``WORLD_SIZE``). ``state`` (from :meth:`state_dict` or :meth:`merge_states`) resumes
        exactly where the consumer was. This process walks, shards and orders the keys
        (keys sent to worker processes or Ray actors must pickle); ``source`` defaults to
        ``"keys"``; the other options are :class:`Feed`'s. Raises ``ConfigError``.
        """
        spec = KeySpec.check(
            keys,
            ordered=ordered,
            shard=shard,
            epochs=epochs,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            state=state,
        )
        keyed = cast(FetchFn, KeyedFetch(fetch_one, spec))
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
        """Rows per batch now (see :meth:`set_batch_size`)."""
        if self._run is not None:
            return self._run.batch_size()
        if self._tracker is not None:
            return self._tracker.batch_size
        return self._pending_size or self._spec.options.batch_size

    @property
    def source(self) -> str:
        return self._spec.options.source

    @property
    def concurrency(self) -> int | Adaptive:
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

    async def __aexit__(self, et: type[BaseException] | None, *_: object) -> None:
        try:
            await self.aclose()
        except AsyncFeedError:
            self._failed_too(et)

    def _failed_too(self, et: type[BaseException] | None) -> None:
        """Closing failed: raise, unless the consumer's own error is on its way already."""
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
            run = Run(self._spec, self._life, self._tracker)
        except BaseException:
            self._life.stopped()
            raise
        self._run = run
        if self._pending_size is not None:
            run.set_batch_size(self._pending_size)
        self._life.on_stopped(functools.partial(self._sync.answer_waiting, run))
        self._finalizer = weakref.finalize(self, forgotten, run, self._life, repr(self))
        run.start(self)

    async def aclose(self, *, timeout: float = 5.0) -> None:
        """Stop the feed and wait for it, within ``timeout`` seconds. Idempotent.

        Rows in flight are counted as dropped; sync calls stuck are abandoned; worker
        processes that ignore the stop are killed in time. Cancelling the caller does not
        cut the stop short: it completes (in time), then the cancellation goes on.

        Raises:
            FeedTimeoutError: the tasks did not end in time (a fetcher swallowing cancellation
                or blocking the loop); AsyncFeedError: the feed's error, if unseen.
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
        check_on_loop(run.loop)
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
            FeedTimeoutError: the feed did not stop in time (a blocked loop, or a fetcher
                swallowing cancellation); AsyncFeedError: the feed's error, if unseen.
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
            FeedExhausted: a finite feed delivered its last batch, or it was stopped.
            AsyncFeedError: the error that stopped the feed (``FeedStateError``: not started).
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

    def __exit__(self, et: type[BaseException] | None, *_: object) -> None:
        try:
            self.stop()
        except AsyncFeedError:
            self._failed_too(et)

    def progress(
        self, *, file: TextIO | None = None, interval: float = 0.5, desc: str | None = None
    ) -> Progress:
        """Iterate with a tqdm progress bar (``for`` or ``async for``): rows/s, skipped,
        retried, and the share of the loop's time spent waiting, with its main cause."""
        return Progress(self, file=file, interval=interval, desc=desc)

    def __len__(self) -> int:
        """Batches per epoch for this rank of a keyed feed over sized keys, counting one row
        per key (as the ready fetchers make); ``TypeError`` for seed-style or unsized keys."""
        keys = self._spec.keys
        if keys is None:
            raise TypeError("a seed-style feed has no length; it streams until stopped")
        return keys.batches(self.batch_size, drop_last=self._spec.options.drop_last)

    # -- checkpoints and batch size -----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the consumer is, right after the last batch it received (JSON types only);
        resume with ``from_keys(..., state=)`` or :meth:`load_state_dict` (torch's
        ``Stateful``). Raises ``FeedStateError`` for a seed-style feed (no position)."""
        return self._keyed_tracker().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` when started; before :meth:`start` / ``async with`` only.
        Raises ``ConfigError`` naming the field when ``state`` cannot be honoured."""
        tracker = self._keyed_tracker()
        if self.state is not FeedState.NEW:
            raise FeedStateError("load_state_dict() must come before the feed starts")
        self._tracker = tracker.reloaded(state)

    @staticmethod
    def merge_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """One state from every rank's, to resume with any number of ranks (elastic)."""
        return merge_states(states)

    def set_batch_size(self, batch_size: int) -> None:
        """Make batches of ``batch_size`` rows from the next batch started on (thread-safe;
        from another thread it applies on the loop soon after). Carried rows are kept;
        seed-style fetchers' hint follows; the state records it, so a resume goes on with it."""
        size = check_positive_int("batch_size", batch_size, maximum=MAX_BATCH_SIZE)
        run = self._run
        if run is not None:
            if on_loop(run.loop):
                run.set_batch_size(size)  # recorded before the caller's next state_dict()
            else:
                run.loop.call_soon_threadsafe(run.set_batch_size, size)
        elif self._tracker is not None:
            self._tracker.resized(size)
        else:
            self._pending_size = size

    def _keyed_tracker(self) -> Tracker:
        if self._tracker is None:
            raise FeedStateError("a seed-style feed has no position; only keyed feeds do")
        return self._tracker

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> FeedStats:
        """A consistent snapshot; callable from any thread, in any state."""
        run = self._run
        if run is not None:
            return run.stats(self.state.value)
        tracker = self._tracker  # a keyed feed not started: where it will resume
        epoch = None if tracker is None else tracker.epoch
        return unstarted(self.source, self.state.value, epoch)
