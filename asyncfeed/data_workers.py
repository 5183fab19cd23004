"""Caffe2's classic ``data_workers`` API, as a thin layer over :class:`~asyncfeed.Feed`.

Code written for Caffe2 ports by changing one import::

    from caffe2.python import data_workers   # before
    from asyncfeed import data_workers       # after

Each :func:`init_data_input_workers` call adds one feed (in Caffe2, one per device) to the
process-wide :class:`GlobalCoordinator` it returns. The feeds run on one private event-loop
thread, so feeds of one ``input_source_name`` share its chunk queue. With a Caffe2 ``net``,
batches go into Caffe2 BlobsQueues that the net reads with ``DequeueBlobs`` ops
(:class:`~asyncfeed.sinks.caffe2.Caffe2Sink`, on the current device and name scope). With
``net=None`` they go into one pure-Python :class:`~asyncfeed.BlobsQueue` per blob, reached
with :meth:`GlobalCoordinator.get_queues`.

As in Caffe2, ``init_fun(data_coordinator, global_coordinator)`` is called by
:meth:`GlobalCoordinator.start` once per call's coordinator (a :class:`DataInputCoordinator`),
all of them in call order before any of their fetchers starts. Where this differs from
Caffe2: a fetcher exception is kept and re-raised by ``coordinator.stop()`` unless read before
with :meth:`GlobalCoordinator.take_error`; ``fetch_fun`` may be ``async def``; leftover rows
are carried, never pushed back into a queue; ``batch_columns`` other than 0 are refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, final

from .errors import ConfigError, FeedStateError, FeedTimeoutError, FetchError
from .feed import Feed
from .options import check_blobs, check_positive_int
from .protocols import FetchFn
from .sinks import BlobsQueue, QueuePerBlob, Sink
from .sinks.caffe2 import C2_QUEUE_CAPACITY, Caffe2Sink, load_caffe2
from .state import FeedState
from .stats import ExternalLogger, report

__all__ = ["DataInputCoordinator", "GlobalCoordinator", "init_data_input_workers"]

log = logging.getLogger("asyncfeed.data_workers")


InitFun = Callable[["DataInputCoordinator", "GlobalCoordinator"], Any]


@final
class DataInputCoordinator:
    """The coordinator of one :func:`init_data_input_workers` call: one feed and its sink.

    What Caffe2 passed as ``init_fun``'s first argument (its per-source coordinator).
    """

    __slots__ = ("feed", "init_fun", "loggers", "sink", "started")

    def __init__(
        self,
        feed: Feed,
        sink: Sink,
        loggers: tuple[ExternalLogger, ...],
        init_fun: InitFun | None,
    ) -> None:
        self.feed: Final = feed
        self.sink: Final = sink
        self.loggers: Final = loggers
        self.init_fun: Final = init_fun
        self.started = False

    @property
    def input_source_name(self) -> str:
        return self.feed.source

    def get_worker_ids(self) -> list[int]:
        """The ids of this call's fetch workers."""
        return list(self.feed.worker_ids)

    def is_active(self) -> bool:
        """True while the feed runs."""
        return self.feed.state is FeedState.RUNNING

    def __repr__(self) -> str:
        return f"<DataInputCoordinator {self.input_source_name!r} {self.feed.state.value}>"


@final
class GlobalCoordinator:
    """The process-wide coordinator of the classic API; every call returns this same object.

    Thread-safe. Feeds stay registered until a :meth:`stop` in which they all ended.
    """

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._entries: list[DataInputCoordinator] = []
        self._worker_ids: list[int] = []
        self._error: BaseException | None = None
        self._error_read = False

    def _add(self, entry: DataInputCoordinator) -> None:
        with self._lock:
            self._entries.append(entry)
            self._worker_ids.extend(entry.feed.worker_ids)

    def start(self, *, timeout: float = 30.0) -> None:
        """Start every feed not started yet; calling it again adds no workers.

        First, in call order, ``init_fun(data_coordinator, global_coordinator)`` of each
        (Caffe2 ran every init before any worker thread); then every feed starts.

        Raises:
            FetchError: an ``init_fun`` raised (chained); no feed of this start was started.
            FeedStateError: a feed was stopped before it was started.
            ConfigError: feeds of one source disagree on blobs or ``max_buffered_batches``.
        """
        with self._lock:
            todo = [e for e in self._entries if not e.started]
            for entry in todo:
                entry.started = True
        try:
            for entry in todo:
                if entry.init_fun is not None:
                    entry.init_fun(entry, self)
        except Exception as exc:
            with self._lock:
                for entry in todo:
                    entry.started = False
            raise FetchError(
                f"init_fun of input source {entry.input_source_name!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for entry in todo:
            entry.feed.start(timeout=timeout)

    def stop(self, *, timeout: float = 5.0) -> bool:
        """Stop every feed, each within ``timeout`` s; True when every worker ended.

        Closing the sinks wakes every reader and writer blocked on them. A sync fetcher
        stuck in a call is abandoned on its daemon thread, not waited for. Feeds that ended
        are forgotten (their worker ids stay in :meth:`get_worker_ids`, as in Caffe2).

        Raises:
            AsyncFeedError: the first error that stopped a feed (a ``FetchError`` chained to
                the fetcher's exception), unless already read with :meth:`take_error`.
        """
        with self._lock:
            entries = list(self._entries)
        return self._stop(entries, timeout)

    def stop_coordinator(self, input_source_name: str, *, timeout: float = 5.0) -> bool:
        """Stop only the feeds of ``input_source_name``; as :meth:`stop` otherwise."""
        with self._lock:
            entries = [e for e in self._entries if e.feed.source == input_source_name]
        return self._stop(entries, timeout)

    def _stop(self, entries: list[DataInputCoordinator], timeout: float) -> bool:
        ended = True
        for entry in entries:
            feed = entry.feed
            try:
                feed.stop(timeout=timeout)
            except FeedTimeoutError:
                log.warning("feed %r did not stop within %.1f s", feed, timeout)
                ended = False
            except Exception as exc:
                self._keep(exc)
            report(feed.stats(), entry.loggers)  # Caffe2 logged its metrics once more at stop
        with self._lock:
            if ended:
                self._entries = [e for e in self._entries if e not in entries]
            error, unread = self._error, not self._error_read
            if ended and not self._entries:
                self._error, self._error_read = None, False
            elif unread:
                self._error_read = True
        if error is not None and unread:
            raise error
        return ended

    def _keep(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc

    def take_error(self) -> BaseException | None:
        """The first error that stopped one of the feeds, or None; marks it read.

        Once read, :meth:`stop` does not raise it again.
        """
        with self._lock:
            if self._error is None:
                self._error = next((e.feed.error for e in self._entries if e.feed.error), None)
            if self._error is not None:
                self._error_read = True
            return self._error

    def get_worker_ids(self) -> list[int]:
        """Ids of every fetch worker created through the coordinator, unique in the process."""
        with self._lock:
            return list(self._worker_ids)

    def get_queues(
        self, input_source_name: str = "train", index: int = 0
    ) -> Mapping[str, BlobsQueue]:
        """With ``net=None``: blob name → the :class:`~asyncfeed.BlobsQueue` of that blob.

        ``index`` picks among the calls made for ``input_source_name``, in call order. Each
        ``queues[blob].dequeue(timeout=...)`` returns a one-array record, or None once the feed
        stopped and the queue is drained.

        Raises:
            FeedStateError: no such feed, or it feeds a Caffe2 net's queues.
        """
        with self._lock:
            sinks = [e.sink for e in self._entries if e.feed.source == input_source_name]
        if not -len(sinks) <= index < len(sinks):
            raise FeedStateError(
                f"no feed #{index} for input source {input_source_name!r} ({len(sinks)} added)"
            )
        sink = sinks[index]
        if not isinstance(sink, QueuePerBlob):
            raise FeedStateError(
                f"feed #{index} of {input_source_name!r} feeds a Caffe2 net; its queues "
                "are in the Caffe2 workspace"
            )
        return sink.queues


_coordinator: Final = GlobalCoordinator()


def init_data_input_workers(
    net: Any,
    input_blob_names: Sequence[str],
    fetch_fun: FetchFn,
    batch_size: int,
    num_worker_threads: int = 2,
    input_source_name: str = "train",
    max_buffered_batches: int = 800,
    init_fun: InitFun | None = None,
    external_loggers: Sequence[ExternalLogger] | None = None,
    dont_rebatch: bool = False,
    batch_columns: Sequence[int] | None = None,
    timeout: float = 600,
) -> GlobalCoordinator:
    """Add one feed of ``fetch_fun`` into ``input_blob_names``; return the global coordinator.

    Args:
        net: a Caffe2 net that dequeues the batches, or None for pure-Python BlobsQueues.
        input_blob_names: blob names, in the order ``fetch_fun`` returns its arrays.
        fetch_fun: ``fetch_fun(worker_id, batch_size)`` returning a list of arrays (any
            number of rows) or None; a plain function runs on a thread, ``async def`` on the
            feed's event loop.
        batch_size: rows per batch.
        num_worker_threads: fetch workers of this feed.
        input_source_name: feeds of one source share a chunk queue; sources never mix.
        max_buffered_batches: bound of the source's chunk queue (in chunks).
        init_fun: ``init_fun(data_coordinator, global_coordinator)``, called by
            ``start()`` before this call's fetchers start (Caffe2's signature).
        external_loggers: objects with ``log(dict)``, given Caffe2's metric names
            (``fetcher_time``, ``enqueue_time``, ``inputs_per_sec``, ``queue_size``,
            ``time_elapsed``) every minute and at stop.
        dont_rebatch: deliver every chunk as one batch, as it came.
        batch_columns: only None or all zeros (the first dimension) are supported.
        timeout: ``DequeueBlobs`` timeout in seconds, with a Caffe2 net.

    Raises:
        ConfigError: an invalid argument, or a ``net`` without an importable Caffe2.
    """
    # Checked under the classic names, before a Caffe2 net gets any op.
    if not callable(fetch_fun):
        raise ConfigError(f"fetch_fun must be callable, got {fetch_fun!r}")
    if init_fun is not None and not callable(init_fun):
        raise ConfigError(f"init_fun must be callable, got {init_fun!r}")
    for name, value in (
        ("batch_size", batch_size),
        ("num_worker_threads", num_worker_threads),
        ("max_buffered_batches", max_buffered_batches),
    ):
        check_positive_int(name, value)
    if not isinstance(input_source_name, str) or not input_source_name:
        raise ConfigError(
            f"input_source_name must be a non-empty string, got {input_source_name!r}"
        )
    if batch_columns is not None and any(c != 0 for c in batch_columns):
        raise ConfigError(
            f"batch_columns other than 0 are not supported, got {list(batch_columns)}"
        )
    blobs = check_blobs(input_blob_names)
    loggers = tuple(external_loggers or ())
    sink: Sink
    if net is None:
        sink = QueuePerBlob(blobs, capacity=C2_QUEUE_CAPACITY)
    else:
        c2 = load_caffe2()
        if c2 is None:
            raise ConfigError(
                "a Caffe2 net was given, but caffe2.python does not import; pass net=None "
                "to read batches from BlobsQueues"
            )
        sink = Caffe2Sink(
            net,
            blobs,
            source=input_source_name,
            device_option=c2.scope.CurrentDeviceScope(),
            namescope=c2.scope.CurrentNameScope(),
            timeout=float(timeout),
            caffe2=c2,
        )
    feed = Feed(
        fetch_fun,
        blobs=blobs,
        batch_size=batch_size,
        concurrency=num_worker_threads,
        source=input_source_name,
        max_buffered_chunks=max_buffered_batches,
        rebatch=not dont_rebatch,
        external_loggers=loggers,
        sink=sink,
    )
    _coordinator._add(DataInputCoordinator(feed, sink, loggers, init_fun))
    return _coordinator
