"""Small, pure measuring instruments: a smoothed event rate and a served-concurrency window.

Both take the time as an argument (seconds on any monotonic clock), so they are tested
without waiting and hold no lock: their owner serialises calls.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, final

__all__ = ["RateMeter", "ServedWindow"]


@final
class RateMeter:
    """Events per second, smoothed over fixed buckets (botocore's ``RateClocker`` idea).

    Each closed bucket of ``bucket`` seconds moves the rate towards its own count by
    ``1 - smoothing``; empty buckets decay it. Before the first bucket closes, the rate is
    the count so far over the time since the first event (at least one tenth of a bucket).
    """

    __slots__ = ("_count", "_first", "_rate", "_start", "bucket", "closed", "smoothing")

    def __init__(self, bucket: float = 0.5, smoothing: float = 0.8) -> None:
        self.bucket: Final = bucket
        self.smoothing: Final = smoothing
        self._start: float | None = None
        self._first = 0.0
        self._count = 0
        self._rate = 0.0
        self.closed = False

    def add(self, now: float, n: int = 1) -> None:
        """Count ``n`` events at ``now``."""
        if self._start is None:
            self._start = self._first = now
        else:
            self._roll(now)
        self._count += n

    def rate(self, now: float) -> float:
        """Events per second at ``now`` (0.0 before the first event)."""
        if self._start is None:
            return 0.0
        self._roll(now)
        if not self.closed:
            return self._count / max(now - self._first, self.bucket / 10)
        return self._rate

    def _roll(self, now: float) -> None:
        start = self._start
        assert start is not None
        elapsed = now - start
        if elapsed < self.bucket:
            return
        buckets = int(elapsed // self.bucket)
        observed = self._count / self.bucket
        if self.closed:
            s = self.smoothing
            self._rate = s * self._rate + (1 - s) * observed
        else:  # the first bucket sets the rate outright
            self._rate = observed
            self.closed = True
        if buckets > 1:  # empty buckets since: each decays the rate
            self._rate *= self.smoothing ** (buckets - 1)
        self._count = 0
        self._start = start + buckets * self.bucket


@final
class ServedWindow:
    """The concurrency a host has served: overlapping successful requests, recently.

    Keeps the ``(start, end)`` of the last successes within ``window`` seconds (at most
    ``cap``) and answers the concurrency level the successes reached for at least
    ``share`` of the time something was in flight, so that brief peaks (a response in
    transit while the next request is already served) do not count.
    """

    __slots__ = ("_spans", "cap", "share", "window")

    def __init__(self, window: float = 3.0, cap: int = 4096, share: float = 0.1) -> None:
        self.window: Final = window
        self.cap: Final = cap
        self.share: Final = share
        self._spans: deque[tuple[float, float]] = deque(maxlen=cap)

    def add(self, start: float, end: float) -> None:
        """Record one successful request that ran from ``start`` to ``end``."""
        self._spans.append((start, end))

    def __len__(self) -> int:
        return len(self._spans)

    def level(self, now: float, minimum: int = 8) -> int | None:
        """The served concurrency, or None with fewer than ``minimum`` recent successes."""
        spans = self._spans
        horizon = now - self.window
        while spans and spans[0][1] < horizon:
            spans.popleft()
        if len(spans) < minimum:
            return None
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        time_at: dict[int, float] = {}
        level = 0
        last = events[0][0]
        for t, step in events:
            if level and t > last:
                time_at[level] = time_at.get(level, 0.0) + (t - last)
            last = t
            level += step
        busy = sum(time_at.values())
        if busy <= 0:
            return max(1, math.ceil(len(spans) / 2))  # all instantaneous: no timing to go by
        above = 0.0
        for lvl in sorted(time_at, reverse=True):
            above += time_at[lvl]
            if above >= self.share * busy:
                return lvl
        return 1
