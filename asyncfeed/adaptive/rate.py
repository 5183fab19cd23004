"""A host's request rate: a token bucket cut on throttling and probed back up along a cubic.

Many services limit requests per second, not requests in flight, and answer fast; against
them even one request at a time can exceed the allowed rate, so a concurrency limit alone
cannot stop the refusals. :class:`RateLimiter` is the pacing botocore's adaptive retry mode
uses (its ``ClientRateLimiter`` with ``CubicCalculator``), as pure logic:

- off until the first throttle: requests go as fast as the concurrency limit lets them;
- on a throttle (once per epoch, like the concurrency limiter): the rate is cut to ``BETA``
  times the rate measured (or the current fill rate, if lower), and the measured rate is
  remembered as ``last_max``;
- on each success the fill rate follows ``C * (t - K) ** 3 + last_max``, ``t`` seconds
  after the cut, with ``K = cbrt(last_max * (1 - BETA) / C)``: concave back up to
  ``last_max`` in ``K`` seconds, a plateau around it, then convex probing beyond; never
  more than twice the measured rate, so a limit that is not used cannot run away.

The bucket holds at most ``BURST`` seconds of its fill rate (and at least one token), so
requests leave evenly. ``Retry-After`` is honoured by the host policy's pause, on top.
"""

from __future__ import annotations

import math
from typing import Final, final

from .meter import RateMeter

__all__ = ["BETA", "BURST", "MIN_RATE", "SCALE", "RateLimiter"]

BETA: Final = 0.7
SCALE: Final = 0.4  # botocore's C
MIN_RATE: Final = 0.5
BURST: Final = 0.1
EPSILON: Final = 1e-6  # waits shorter than this are no wait (a timer could not tell)


@final
class RateLimiter:
    """Requests per second one host may receive; ``math.inf`` until it throttles."""

    __slots__ = (
        "_k",
        "_last",
        "_last_max",
        "_throttled_at",
        "_tokens",
        "enabled",
        "epoch",
        "fill",
        "meter",
        "reason",
    )

    def __init__(self) -> None:
        self.enabled = False
        self.fill = math.inf
        self.epoch = 0
        self.reason = "unlimited"
        self.meter: Final = RateMeter(bucket=0.5, smoothing=0.8)
        self._tokens = 0.0
        self._last: float | None = None
        self._last_max = 0.0
        self._throttled_at = 0.0
        self._k = 0.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.fill * BURST)

    def _refill(self, now: float) -> None:
        last = self._last
        self._last = now
        if last is not None and now > last:
            self._tokens = min(self.capacity, self._tokens + (now - last) * self.fill)

    def delay(self, now: float) -> float:
        """Seconds until a request may go (0.0: now); takes nothing."""
        if not self.enabled:
            return 0.0
        self._refill(now)
        if self._tokens >= 1.0 - EPSILON:
            return 0.0
        return max(EPSILON, (1.0 - self._tokens) / self.fill)

    def take(self, now: float) -> None:
        """A request goes at ``now``: count it and spend a token."""
        self.meter.add(now)
        if self.enabled:
            self._refill(now)
            self._tokens -= 1.0

    def throttled(self, epoch: int, now: float) -> bool:
        """A request sent in ``epoch`` was throttled; True when this cut the rate."""
        if epoch != self.epoch:
            return False
        measured = self.meter.rate(now)
        use = min(measured, self.fill) if self.enabled else measured
        use = max(MIN_RATE, use)
        self._last_max = use
        self._k = (use * (1 - BETA) / SCALE) ** (1 / 3)
        self._throttled_at = now
        self.fill = max(MIN_RATE, use * BETA)
        if not self.enabled:
            self.enabled = True
            self._tokens = 0.0
            self._last = now
        self._tokens = min(self._tokens, self.capacity)
        self.reason = "throttled"
        self.epoch += 1
        return True

    def succeeded(self, now: float) -> None:
        """A request got a good answer: move the fill rate along the cubic."""
        if not self.enabled:
            return
        self._refill(now)
        t = now - self._throttled_at
        cubic = SCALE * (t - self._k) ** 3 + self._last_max
        new = max(MIN_RATE, min(cubic, 2 * self.meter.rate(now)))
        if new > self.fill:
            self.reason = "probing"
        self.fill = new
