"""Row accounting, frozen statistics snapshots and interval logging.

Every row a fetcher returns enters a :class:`Ledger` and moves through stages
(queued → rebatching → batched → handing to a sink) until it is delivered or dropped by an
explicit cause. Because rows only ever move between counters under one lock,
``rows_fetched == rows_delivered + rows_dropped + rows_in_flight`` holds at every snapshot.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol, final

__all__ = [
    "BACKPRESSURE_STAGES",
    "WAIT_CAUSES",
    "DropCause",
    "ExternalLogger",
    "FeedStats",
    "Ledger",
    "Stage",
]

#: Why a consumer waited for a batch: the first stage, from the consumer up, found empty.
#: ``sink``: the device queue (batches ready, the sink's copy is behind); ``rebatch``: chunks
#: wait but no batch is ready; ``fetch_limit``: every fetch slot is busy; ``throttled``:
#: fetches held back by retry backoff, ``Retry-After`` or an adaptive limit or rate;
#: ``decode``: the decode pool's queue is not empty; ``source``: no keys, or fetchers
#: returning None; ``workers``: calls are with worker processes or actors.
WAIT_CAUSES: Final = (
    "sink",
    "rebatch",
    "fetch_limit",
    "throttled",
    "decode",
    "source",
    "workers",
)
#: Where the feed was blocked because its consumer (or the next stage) was slower:
#: ``chunk_queue`` (fetchers waiting for room), ``batch_queue`` (the rebatcher waiting for
#: the consumer), ``sink`` (the sink's thread waiting in ``put``).
BACKPRESSURE_STAGES: Final = ("chunk_queue", "batch_queue", "sink")

log = logging.getLogger("asyncfeed.stats")


class Stage(enum.IntEnum):
    """Where an in-flight row is."""

    QUEUED = 0  # in the chunk queue, or in a fetch worker's hands waiting to enter it
    REBATCHING = 1  # carried by a rebatcher
    BATCHED = 2  # in a full batch waiting for the consumer
    HANDING = 3  # handed to a sink's put(), not yet accepted


class DropCause(enum.StrEnum):
    """Why rows were dropped instead of delivered."""

    STOP = "stop"  # the feed stopped with the rows in flight
    ERROR = "error"  # the feed stopped on an error with the rows in flight
    DROP_LAST = "drop_last"  # the final partial batch of a finite source, with drop_last=True
    ABANDONED = "abandoned"  # late result of a fetcher abandoned at stop
    SINK_CLOSED = "sink_closed"  # the sink was closed before accepting the batch


class ExternalLogger(Protocol):
    """Receives a metrics dict every ``log_interval`` seconds (Caffe2's external loggers)."""

    def log(self, metrics: dict[str, Any]) -> None: ...


@final
class Ledger:
    """Thread-safe row counters by stage, shared by the feeds of one source."""

    __slots__ = ("_dropped", "_lock", "_stages", "delivered", "fetched")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._stages = [0, 0, 0, 0]
        self._dropped: Counter[str] = Counter()
        self.fetched = 0
        self.delivered = 0

    def fetch(self, rows: int) -> None:
        """Count rows just returned by a fetcher; they enter the QUEUED stage."""
        with self._lock:
            self.fetched += rows
            self._stages[Stage.QUEUED] += rows

    def move(self, rows: int, src: Stage, dst: Stage) -> None:
        """Move rows from one in-flight stage to the next."""
        with self._lock:
            self._stages[src] -= rows
            self._stages[dst] += rows

    def deliver(self, rows: int, src: Stage) -> None:
        """Count rows handed to the consumer or accepted by a sink."""
        with self._lock:
            self._stages[src] -= rows
            self.delivered += rows

    def drop(self, rows: int, src: Stage | None, cause: DropCause) -> None:
        """Count rows dropped from an in-flight stage (or never queued, when ``src`` is None)."""
        if rows == 0:
            return
        with self._lock:
            if src is None:
                self.fetched += rows
            else:
                self._stages[src] -= rows
            self._dropped[cause] += rows

    def rows(self, stage: Stage) -> int:
        """Rows currently in one stage."""
        return self._stages[stage]

    def snapshot(self) -> tuple[int, int, dict[str, int], tuple[int, ...]]:
        """(fetched, delivered, dropped by cause, rows per stage), consistent with each other."""
        with self._lock:
            return (
                self.fetched,
                self.delivered,
                {str(k): v for k, v in self._dropped.items()},
                tuple(self._stages),
            )


@dataclass(frozen=True, slots=True)
class FeedStats:
    """A frozen snapshot of a feed's statistics.

    Row counts (``rows_*``, ``dropped_by_cause``) cover the feed's source: feeds that share a
    source share one ledger, since a row fetched by one may be delivered by another. The
    invariant ``rows_fetched == rows_delivered + rows_dropped + rows_in_flight`` holds in
    every snapshot. The other counters are the feed's own.

    Why the consumer waits: ``consumer_wait_s`` seconds in all (``consumer_waits`` waits
    that blocked), split by cause in ``consumer_wait_by_cause`` (keys from
    :data:`WAIT_CAUSES`); ``starvation`` is the share of the consumer's time spent waiting
    (0 to 1) since it first asked for a batch. ``backpressure_s_by_stage`` (keys from
    :data:`BACKPRESSURE_STAGES`) is time the feed spent blocked on a slower consumer.
    ``queues`` maps ``chunks``, ``batches`` (and ``keys``, ``sink`` where present) to
    ``(items, capacity)``. ``inflight`` fetch calls are running now, of at most
    ``concurrency_limit`` (``concurrency_reason`` says why it is what it is: ``fixed``, or
    what an adaptive policy saw). ``hosts`` comes from the fetchers' ``host_stats()``.
    A keyed feed's ``epoch`` is the epoch its consumer is in, ``epoch_position`` the keys
    of this rank it consumed in it (None and 0 for seed-style feeds).
    """

    source: str
    state: str
    rows_fetched: int
    rows_delivered: int
    rows_dropped: int
    dropped_by_cause: Mapping[str, int]
    rows_in_flight: int
    rows_queued: int
    rows_rebatching: int
    rows_batched: int
    rows_handing: int
    batches_delivered: int
    fetch_calls: int
    fetch_none: int
    fetch_empty: int
    fetch_errors: int
    chunk_queue_depth: int
    batch_queue_depth: int
    inputs_per_sec: float
    mean_fetch_time: float
    mean_enqueue_time: float
    time_elapsed: float
    hosts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    consumer_wait_s: float = 0.0
    consumer_wait_by_cause: Mapping[str, float] = field(default_factory=dict)
    consumer_waits: int = 0
    starvation: float = 0.0
    backpressure_s_by_stage: Mapping[str, float] = field(default_factory=dict)
    time_to_first_batch_s: float | None = None
    queues: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    inflight: int = 0
    concurrency_limit: int = 0
    concurrency_reason: str = "fixed"
    epoch: int | None = None
    epoch_position: int = 0

    def as_metrics(self) -> dict[str, Any]:
        """A flat dict for external loggers, with Caffe2's metric names first."""
        metrics: dict[str, Any] = {
            "fetcher_time": self.mean_fetch_time,
            "enqueue_time": self.mean_enqueue_time,
            "inputs_per_sec": self.inputs_per_sec,
            "queue_size": self.chunk_queue_depth,
            "time_elapsed": self.time_elapsed,
        }
        metrics.update(asdict(self))
        return metrics


@final
class FeedCounters:
    """Per-feed counters, updated on the feed's event loop."""

    __slots__ = (
        "_first",
        "_last",
        "_rate",
        "_rows",
        "_window_rows",
        "_window_start",
        "batches_delivered",
        "enqueue_count",
        "enqueue_time",
        "fetch_calls",
        "fetch_empty",
        "fetch_errors",
        "fetch_none",
        "fetch_time",
        "idle",
        "inflight",
        "started",
    )

    WINDOW: Final = 1.0

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.fetch_calls = 0
        self.fetch_none = 0
        self.fetch_empty = 0
        self.fetch_errors = 0
        self.fetch_time = 0.0
        self.enqueue_time = 0.0
        self.enqueue_count = 0
        self.batches_delivered = 0
        self.inflight = 0  # fetch calls running now
        self.idle = 0  # fetch workers backing off after a None
        self._window_start = self.started
        self._window_rows = 0
        self._rate = 0.0
        self._rows = 0
        self._first = 0.0  # when the first batch was delivered (0: none yet)
        self._last = 0.0

    def delivered(self, rows: int) -> None:
        """Count one delivered batch and update the rows/s of the last closed window."""
        self.batches_delivered += 1
        self._rows += rows
        self._window_rows += rows
        now = time.monotonic()
        if not self._first:
            self._first = self._window_start = now
        self._last = now
        elapsed = now - self._window_start
        if elapsed >= self.WINDOW:
            self._rate = self._window_rows / elapsed
            self._window_start = now
            self._window_rows = 0

    def snapshot(
        self,
        *,
        source: str,
        state: str,
        ledger: Ledger | None,
        chunk_queue_depth: int,
        batch_queue_depth: int,
        hosts: Mapping[str, Mapping[str, Any]],
    ) -> FeedStats:
        """A :class:`FeedStats` from these counters and the source's ledger (None: unstarted)."""
        if ledger is None:
            fetched, delivered = 0, 0
            dropped: dict[str, int] = {}
            stages: tuple[int, ...] = (0, 0, 0, 0)
        else:
            fetched, delivered, dropped, stages = ledger.snapshot()
        calls = self.fetch_calls
        return FeedStats(
            source=source,
            state=state,
            rows_fetched=fetched,
            rows_delivered=delivered,
            rows_dropped=sum(dropped.values()),
            dropped_by_cause=dropped,
            rows_in_flight=sum(stages),
            rows_queued=stages[Stage.QUEUED],
            rows_rebatching=stages[Stage.REBATCHING],
            rows_batched=stages[Stage.BATCHED],
            rows_handing=stages[Stage.HANDING],
            batches_delivered=self.batches_delivered,
            fetch_calls=calls,
            fetch_none=self.fetch_none,
            fetch_empty=self.fetch_empty,
            fetch_errors=self.fetch_errors,
            chunk_queue_depth=chunk_queue_depth,
            batch_queue_depth=batch_queue_depth,
            inputs_per_sec=self.inputs_per_sec(running=state == "running"),
            mean_fetch_time=self.fetch_time / calls if calls else 0.0,
            mean_enqueue_time=self.enqueue_time / self.enqueue_count if self.enqueue_count else 0.0,
            time_elapsed=time.monotonic() - self.started,
            hosts=hosts,
        )

    def time_to_first_batch(self) -> float | None:
        """Seconds from the run's start to its first delivered batch (None before it)."""
        return self._first - self.started if self._first else None

    def inputs_per_sec(self, *, running: bool = True) -> float:
        """Rows/s delivered: over the last closed window of about a second; before the first
        window closes, over the run so far; once the feed stopped, over its whole run. A
        running feed that delivered nothing for two windows reads 0.0."""
        if not self._first:
            return 0.0
        now = time.monotonic()
        if not running:
            span = self._last - self._first
            return self._rows / span if span > 0 else 0.0
        if now - self._last > 2 * self.WINDOW:
            return 0.0  # nothing delivered lately
        if self._rate:
            return self._rate
        span = now - self._first
        return self._rows / span if span > 0 else 0.0


class LagWarning:
    """Warns, at most once per ``period`` seconds, that the chunk queue runs nearly empty.

    Silent for the first ``grace`` seconds: every feed starts with an empty queue.
    """

    __slots__ = ("_last", "_start", "grace", "period", "source")

    def __init__(self, source: str, period: float = 60.0, grace: float = 10.0) -> None:
        self.source = source
        self.period = period
        self.grace = grace
        self._start = time.monotonic()
        self._last = -period

    def check(self, depth: int, capacity: int) -> None:
        """Call when the consumer takes a chunk; warns when the queue is at most 5 % full."""
        if depth * 20 > capacity:
            return
        now = time.monotonic()
        if now - self._start >= self.grace and now - self._last >= self.period:
            self._last = now
            log.warning(
                "data loading lagging: source %r chunk queue holds %d of %d",
                self.source,
                depth,
                capacity,
            )


def report(stats: FeedStats, loggers: tuple[ExternalLogger, ...]) -> None:
    """Log one line for ``stats`` and pass its metrics to every external logger.

    A logger that raises is logged and ignored.
    """
    log.info(
        "source %r: %d rows delivered (%.0f rows/s), %d dropped, %d in flight, "
        "queue %d chunks, fetch %.2f ms, %d errors",
        stats.source,
        stats.rows_delivered,
        stats.inputs_per_sec,
        stats.rows_dropped,
        stats.rows_in_flight,
        stats.chunk_queue_depth,
        stats.mean_fetch_time * 1e3,
        stats.fetch_errors,
    )
    if not loggers:
        return
    metrics = stats.as_metrics()
    for logger in loggers:
        try:
            logger.log(dict(metrics))
        except Exception:
            log.exception("external logger %r failed; ignored", logger)
