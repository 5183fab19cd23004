"""How many fetch calls a feed needs in flight: Little's law, with the consumer's help.

Pure math the feed calls about every second (:class:`UpdateClock`) with what it measured in
the interval (:class:`DemandSample`), and that answers a :class:`Decision`: the new
concurrency limit and why.

- **Demand** (Little's law): to deliver the consumer ``r`` rows/s when a fetch call takes
  ``L`` seconds and returns ``k`` rows, ``r * L / k`` calls must be in flight; the limit
  aims at that times ``HEADROOM``. ``r`` is the consumer's own speed — rows it took over
  the time it was *not* waiting — so a starved consumer's demand is not underestimated.
- **Starved** (the consumer waited more than ``STARVED_SHARE`` of the interval): grow to
  at least ``GROWTH`` times the limit (and one more), unless requests are held back by a
  host's throttling or the decode pool is the bottleneck (``decode-bound``: hold). Held
  requests (``throttled``): growing would only queue more behind the host, so the limit
  comes down, by at most ``SHRINK`` per step, towards the calls the host is serving
  (the limit less those held) times ``HEADROOM``.
- **Full** (the feed was blocked on a full queue or sink for more than ``FULL_SHARE`` of
  the interval): never grow; shrink towards the demand, by at most ``SHRINK`` per step
  (``backpressure``): a slow consumer is not worth loading the service for.
- **Decode-bound** (:func:`decode_bound`): items waited longer for a decode thread than
  ``DECODE_SHARE`` of the whole fetch time: more fetches cannot help; hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, final

from .options import Adaptive

__all__ = [
    "DECODE_SHARE",
    "FULL_SHARE",
    "GROWTH",
    "HEADROOM",
    "REASONS",
    "SHRINK",
    "STARVED_SHARE",
    "Decision",
    "DemandEstimator",
    "DemandSample",
    "UpdateClock",
    "decode_bound",
    "littles_law",
]

HEADROOM: Final = 1.5
GROWTH: Final = 1.25
SHRINK: Final = 0.8
STARVED_SHARE: Final = 0.02
FULL_SHARE: Final = 0.05
DECODE_SHARE: Final = 0.5
#: Every reason a :class:`Decision` gives.
REASONS: Final = ("start", "demand", "starved", "backpressure", "throttled", "decode-bound", "idle")


@dataclass(frozen=True, slots=True)
class DemandSample:
    """What the feed measured over one interval.

    Attributes:
        interval_s: seconds the sample covers.
        rows: rows delivered to the consumer in it.
        consumer_wait_s: seconds the consumer spent waiting for a batch in it.
        fetches: fetch calls that completed in it.
        fetch_time_s: their total duration, in seconds.
        fetch_rows: rows they returned.
        backpressure_s: seconds the feed was blocked on a full queue or sink in it.
        decode_wait_s: seconds items spent queued for a decode thread in it.
        held: requests held back by a host's limit, rate, pause or backoff at the end.
    """

    interval_s: float
    rows: int
    consumer_wait_s: float
    fetches: int
    fetch_time_s: float
    fetch_rows: int
    backpressure_s: float = 0.0
    decode_wait_s: float = 0.0
    held: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """A new concurrency limit, why (one of :data:`REASONS`), and the demand computed."""

    limit: int
    reason: str
    demand: float


def decode_bound(decode_wait_s: float, fetch_time_s: float) -> bool:
    """True when queueing for a decode thread took over ``DECODE_SHARE`` of the fetch time."""
    return fetch_time_s > 0 and decode_wait_s > DECODE_SHARE * fetch_time_s


def littles_law(sample: DemandSample) -> float:
    """Fetch calls needed in flight (Little's law, no headroom); 0.0 without data."""
    if sample.fetches <= 0 or sample.fetch_rows <= 0:
        return 0.0
    busy = sample.interval_s - sample.consumer_wait_s
    speed = sample.rows / max(busy, sample.interval_s * 0.01, 1e-6)
    latency = sample.fetch_time_s / sample.fetches
    rows_per_fetch = sample.fetch_rows / sample.fetches
    return speed * latency / rows_per_fetch


@final
class DemandEstimator:
    """The feed-level concurrency limit under an :class:`Adaptive` policy."""

    __slots__ = ("bounds", "limit", "reason")

    def __init__(self, adaptive: Adaptive) -> None:
        self.bounds: Final = adaptive
        self.limit = adaptive.initial
        self.reason = "start"

    def update(self, sample: DemandSample) -> Decision:
        """The limit after ``sample``; also kept in :attr:`limit` and :attr:`reason`."""
        need = littles_law(sample)
        target = need * HEADROOM
        limit = self.limit
        interval = max(sample.interval_s, 1e-9)
        starved = sample.consumer_wait_s > STARVED_SHARE * interval
        full = sample.backpressure_s > FULL_SHARE * interval
        if full:
            new = max(math.ceil(target), math.floor(limit * SHRINK)) if target < limit else limit
            reason = "backpressure"
        elif decode_bound(sample.decode_wait_s, sample.fetch_time_s):
            new, reason = limit, "decode-bound"
        elif starved and sample.held > 0:
            # the host is the bottleneck: keep what it serves, with headroom, and no more
            serving = math.ceil(max(limit - sample.held, 1) * HEADROOM)
            new = max(serving, math.floor(limit * SHRINK)) if serving < limit else limit
            reason = "throttled"
        elif starved:
            new = max(math.ceil(target), math.ceil(limit * GROWTH), limit + 1)
            reason = "starved"
        elif sample.fetches == 0:
            new, reason = limit, "idle"
        elif target >= limit:
            new, reason = math.ceil(target), "demand"
        else:  # more than needed: come down gently
            new, reason = max(math.ceil(target), math.floor(limit * SHRINK)), "demand"
        self.limit = self.bounds.clamp(new)
        self.reason = reason
        return Decision(self.limit, reason, need)


@final
class UpdateClock:
    """When to recompute: every ``interval`` seconds or every ``completions`` completions,
    but never more often than every ``min_interval`` seconds."""

    __slots__ = ("_count", "_last", "completions", "interval", "min_interval")

    def __init__(
        self, now: float, interval: float = 1.0, completions: int = 50, min_interval: float = 0.1
    ) -> None:
        self.interval: Final = interval
        self.completions: Final = completions
        self.min_interval: Final = min_interval
        self._last = now
        self._count = 0

    def completed(self, n: int = 1) -> None:
        """Count completions."""
        self._count += n

    def due(self, now: float) -> bool:
        """True (and a new interval begins) when it is time to recompute."""
        elapsed = now - self._last
        if elapsed >= self.interval or (
            self._count >= self.completions and elapsed >= self.min_interval
        ):
            self._last = now
            self._count = 0
            return True
        return False
