"""Why the consumer waits, and where the feed is held back: the clocks and the rule.

Every time the consumer waits for a batch (``async for``, ``get()``, a sink's reader), the
feed asks :func:`wait_cause` for the first stage, from the consumer up, that has nothing to
give, and adds the wait to that cause in :class:`Waits`. A consumer slower than the feed
does not wait; the feed then waits for it, and :class:`Blocked` clocks that backpressure per
stage. Reading the clocks is all ``stats()`` does: nothing here is on a path that runs per
row, only per wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol, final

from .stats import WAIT_CAUSES, FeedCounters

__all__ = ["Blocked", "Probe", "SinkWatch", "WaitWatch", "Waits", "wait_cause"]


class WaitWatch(Protocol):
    """What a sink's reader tells the feed about its waits (see ``sinks.ClosableQueue``)."""

    def asked(self) -> None:
        """The reader asked for a batch."""

    def cause(self) -> str:
        """Why there is none ready now (one of ``stats.WAIT_CAUSES``)."""
        ...

    def waited(self, cause: str, seconds: float) -> None:
        """The reader waited ``seconds`` because of ``cause``."""

    def taken(self) -> None:
        """The reader took a batch (its oldest)."""


def wait_cause(
    *,
    sink_behind: bool,
    ready_rows: int,
    batch_size: int,
    remote: bool,
    inflight: int,
    limit: int,
    idle: int,
    keys_starved: bool,
    throttled: int,
    decode_queued: int,
) -> str:
    """The first empty stage, from the consumer up (one of ``stats.WAIT_CAUSES``).

    Args:
        sink_behind: the feed has batches made or being handed to the sink, which has none
            ready for its reader (the device copy is behind).
        ready_rows: rows queued or carried by the rebatcher; a batch's worth means the
            rebatcher, not the fetchers, is behind.
        remote: fetch calls run in worker processes or actors.
        inflight, limit: fetch calls running, and the most allowed.
        idle: fetch workers backing off after their fetcher returned None.
        keys_starved: keyed workers wait for keys that the key source has not produced.
        throttled: requests held by retry backoff, ``Retry-After`` or an adaptive limit.
        decode_queued: decodes waiting for a thread of the decode pool.

    Held requests and queued decodes name the cause only when they are a quarter of the
    calls in flight or more: a retry or two among 64 calls is not what the consumer waits on.
    """
    if sink_behind:
        return "sink"
    if ready_rows >= batch_size:
        return "rebatch"
    significant = max(1, inflight) / 4
    if throttled >= significant:
        return "throttled"
    if decode_queued >= significant:
        return "decode"
    if keys_starved or (idle and inflight == 0):
        return "source"
    if remote and inflight:
        return "workers"
    return "fetch_limit" if inflight >= limit else "source"


@final
class Waits:
    """The consumer's waits: seconds in all and by cause, and its share of the consumer's time.

    Thread-safe: sink readers wait on their own threads.
    """

    __slots__ = ("_by_cause", "_first", "_lock", "count")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._by_cause: dict[str, float] = dict.fromkeys(WAIT_CAUSES, 0.0)
        self._first = 0.0
        self.count = 0

    def asked(self) -> None:
        """The consumer asked for a batch (the first ask starts its clock)."""
        if not self._first:
            self._first = time.perf_counter()

    def add(self, cause: str, seconds: float) -> None:
        """One wait that blocked, for ``seconds``, because of ``cause``."""
        assert cause in WAIT_CAUSES, cause
        with self._lock:
            self._by_cause[cause] += seconds
            self.count += 1

    def snapshot(self) -> tuple[float, Mapping[str, float], int, float]:
        """(seconds in all, seconds by cause, waits, share of the consumer's time waiting)."""
        with self._lock:
            by_cause = {k: v for k, v in self._by_cause.items() if v}
            count = self.count
        total = sum(by_cause.values())
        span = time.perf_counter() - self._first if self._first else 0.0
        share = min(1.0, total / span) if span > 0 else 0.0
        return total, by_cause, count, share


@final
class Blocked:
    """Wall time during which at least one party was blocked at a stage (on one loop)."""

    __slots__ = ("_n", "_since", "_total")

    def __init__(self) -> None:
        self._n = 0
        self._since = 0.0
        self._total = 0.0

    def enter(self) -> None:
        if self._n == 0:
            self._since = time.perf_counter()
        self._n += 1

    def leave(self) -> None:
        self._n -= 1
        if self._n == 0:
            self._total += time.perf_counter() - self._since

    @property
    def seconds(self) -> float:
        """Blocked seconds so far, the block under way included."""
        current = time.perf_counter() - self._since if self._n else 0.0
        return self._total + current


@final
class Probe:
    """Reads a running feed's stages to name the cause of a wait (see :func:`wait_cause`).

    Args:
        batch_size: rows of the batch being made (it may change).
        counters: the feed's counters (``idle``).
        inflight: fetch calls running now.
        ready_rows: rows queued for the rebatcher or carried by it.
        limit: the fetch calls allowed in flight.
        remote: fetch calls run in worker processes or actors.
        keys_starved: keyed workers wait for keys (None: a seed-style feed).
        load: the fetcher's ``load()`` (decodes queued, requests throttled), if it has one.
        handing: batches made or handed to the sink but not taken by its reader.
    """

    __slots__ = ("_args",)

    def __init__(
        self,
        *,
        batch_size: Callable[[], int],
        counters: FeedCounters,
        inflight: Callable[[], int],
        ready_rows: Callable[[], int],
        limit: Callable[[], int],
        remote: bool,
        keys_starved: Callable[[], bool] | None,
        load: Callable[[], Mapping[str, float]] | None,
        handing: Callable[[], int],
    ) -> None:
        self._args: Final = (
            batch_size, counters, inflight, ready_rows, limit, remote, keys_starved, load, handing
        )  # fmt: skip

    def cause(self, *, sink_side: bool = False) -> str:
        """Why the consumer waits now; ``sink_side``: it reads from the feed's sink."""
        (batch_size, counters, inflight, ready_rows, limit, remote, keys_starved, load,
         handing) = self._args  # fmt: skip
        figures: Mapping[str, float] = {}
        if load is not None:
            try:
                figures = load()
            except Exception:  # a figure for attribution is not worth stopping the feed
                figures = {}
        return wait_cause(
            sink_behind=sink_side and handing() > 0,
            ready_rows=ready_rows(),
            batch_size=batch_size(),
            remote=remote,
            inflight=inflight(),
            limit=limit(),
            idle=counters.idle,
            keys_starved=keys_starved is not None and keys_starved(),
            throttled=int(figures.get("throttled", 0)),
            decode_queued=int(figures.get("decode_queued", 0)),
        )


@final
class SinkWatch:
    """The :class:`WaitWatch` a feed gives its sink: the reader's waits, attributed."""

    __slots__ = ("_probe", "_taken", "_waits")

    def __init__(self, waits: Waits, probe: Probe, taken: Callable[[], None] | None) -> None:
        self._waits: Final = waits
        self._probe: Final = probe
        self._taken: Final = taken

    def asked(self) -> None:
        self._waits.asked()

    def cause(self) -> str:
        return self._probe.cause(sink_side=True)

    def waited(self, cause: str, seconds: float) -> None:
        self._waits.add(cause, seconds)

    def taken(self) -> None:
        if self._taken is not None:  # a keyed feed: the batch counts as received now
            self._taken()
