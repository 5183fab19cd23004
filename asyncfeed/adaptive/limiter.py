"""A host's concurrency limit: cut on overload, cut when latency climbs, probe back up.

:class:`ConcurrencyLimiter` is pure control logic (the time is an argument). The law:

- **Overload** (429, 503, a timeout): multiplicative decrease, to ``limit * DECREASE`` or to
  the concurrency the host was recently seen to serve (:class:`~.meter.ServedWindow`),
  whichever is lower — so a burst far above a host's capacity is corrected in one step.
  Like TCP's one reduction per round trip, only a request sent since the last cut (same
  ``epoch``) can cut again: the many refusals of one overload count once.
- **Latency** (Netflix's Gradient2 idea): every update compares the median latency of the
  last interval with a slow baseline (an average that follows falls quickly and rises
  slowly); above ``RTT_TOLERANCE`` times the baseline, the limit is cut by
  ``LATENCY_DECREASE``.
- **Probing**: only while requests waited for a slot (the limit binds). With no overload
  seen yet the limit doubles (slow start) as long as doubling brings more answers per
  second: ``FLAT_ROUNDS`` rounds in a row that did not raise the answer rate by
  ``STARTUP_GAIN`` end it (BBR's "full pipe": more in flight would only queue, on the host
  or in this process), and so does a round whose latency rose above ``STARTUP_RTT`` times
  the baseline; the limit then probes slowly. After an overload, the level that
  failed is the *ceiling*: the limit climbs back to just under it quickly, then tries one
  more slot after a hold that doubles each time the same level fails again (``HOLD_MIN`` to
  ``HOLD_MAX`` seconds), so a converged limit rarely touches the host's edge.
  ``PROBES_TO_FORGET`` successful probes in a row forget the ceiling (the host got
  faster) and slow start resumes.
- **Idle**: a limit far above what is used shrinks towards twice the in-flight peak, so a
  burst after a quiet time cannot overload the host.

Updates happen every ``INTERVAL`` seconds or every ``COMPLETIONS`` completions (at least
``MIN_INTERVAL`` apart); cuts happen at once.
"""

from __future__ import annotations

import math
import statistics
from typing import Final, final

from .meter import ServedWindow

__all__ = [
    "COMPLETIONS",
    "DECREASE",
    "HOLD_MAX",
    "HOLD_MIN",
    "INTERVAL",
    "LATENCY_DECREASE",
    "RTT_TOLERANCE",
    "ConcurrencyLimiter",
    "Ticket",
]

DECREASE: Final = 0.9
LATENCY_DECREASE: Final = 0.9
RTT_TOLERANCE: Final = 2.0
LONG_DOWN: Final = 0.2  # baseline weight of a faster interval
LONG_UP: Final = 0.05  # baseline weight of a slower interval
INTERVAL: Final = 1.0
COMPLETIONS: Final = 50
MIN_INTERVAL: Final = 0.05
HOLD_MIN: Final = 2.0
HOLD_MAX: Final = 30.0
PROBES_TO_FORGET: Final = 4
STARTUP_GAIN: Final = 1.25
STARTUP_RTT: Final = 1.25
FLAT_ROUNDS: Final = 2
SAME_LEVEL: Final = 1.1  # a failure within 10 % of the ceiling is the same level failing again
MAX_SAMPLES: Final = 4096


@final
class Ticket:
    """One request let through: when, with how many in flight (itself included), epochs."""

    __slots__ = ("epoch", "inflight", "rate_epoch", "start")

    def __init__(self, start: float, inflight: int, epoch: int, rate_epoch: int) -> None:
        self.start = start
        self.inflight = inflight
        self.epoch = epoch
        self.rate_epoch = rate_epoch


@final
class ConcurrencyLimiter:
    """How many requests one host may have in flight; see the module's docstring.

    Args:
        minimum, maximum: bounds of the limit.
        start: the first limit.
    """

    __slots__ = (
        "_best_rate",
        "_bound",
        "_completions",
        "_flat",
        "_hold",
        "_hold_until",
        "_last_update",
        "_long",
        "_peak",
        "_probes",
        "_problems",
        "_rtts",
        "_successes",
        "ceiling",
        "epoch",
        "limit",
        "maximum",
        "minimum",
        "reason",
        "served",
    )

    def __init__(self, *, minimum: int = 1, maximum: int = 512, start: int = 16) -> None:
        self.minimum: Final = minimum
        self.maximum: Final = maximum
        self.limit = float(max(minimum, min(maximum, start)))
        self.reason = "start"
        self.epoch = 0
        self.ceiling: float | None = None
        self.served: Final = ServedWindow()
        self._hold = HOLD_MIN
        self._hold_until = -math.inf
        self._probes = 0
        self._long: float | None = None
        self._rtts: list[float] = []
        self._bound = False
        self._problems = False
        self._peak = 0
        self._completions = 0
        self._successes = 0
        self._best_rate = 0.0
        self._flat = 0
        self._last_update: float | None = None

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(self.minimum, int(self.limit))

    @property
    def baseline(self) -> float | None:
        """The slow latency baseline, in seconds (None before the first update)."""
        return self._long

    def sent(self, inflight: int) -> None:
        """A request was sent; ``inflight`` counts it."""
        self._peak = max(self._peak, inflight)

    def waited(self) -> None:
        """A request had to wait for a slot: the limit binds."""
        self._bound = True

    def succeeded(self, ticket: Ticket, now: float) -> None:
        """A request sent with ``ticket`` got a good answer at ``now``."""
        if len(self._rtts) < MAX_SAMPLES:
            self._rtts.append(now - ticket.start)
        self.served.add(ticket.start, now)
        self._completions += 1
        self._successes += 1
        self._maybe_update(now)

    def overloaded(
        self,
        ticket: Ticket,
        now: float,
        reason: str,
        *,
        estimate: int | None = None,
        min_hold: float = 0.0,
    ) -> bool:
        """The host refused ``ticket``'s request (429/503) or it timed out: cut once per epoch.

        ``estimate``: what the host likely serves, used while no served level is known yet
        (the requests in flight ahead of the refused one). ``min_hold``: seconds to hold
        at least before probing the level that failed again (the host asked for a pause,
        which another failed probe would cost again). Returns True when this call cut the
        limit.
        """
        self._problems = True
        self._completions += 1
        if ticket.epoch != self.epoch:
            return False  # sent before the last cut: already accounted for
        old = self.limit
        new = old * DECREASE
        served = self.served.level(now)
        level = served if served is not None else estimate
        if level is not None and level < new:
            new = float(level)
        new = max(float(self.minimum), new)
        failed_at = min(old, float(ticket.inflight))
        if level is not None:  # it served that much: the edge is just above
            failed_at = min(failed_at, level + 1.0)
        failed_at = max(new + 1.0, failed_at)
        previous = self.ceiling
        if previous is not None and failed_at <= previous * SAME_LEVEL:
            self._hold = min(HOLD_MAX, self._hold * 2)
        else:
            self._hold = HOLD_MIN
        self._hold = min(HOLD_MAX, max(self._hold, min_hold))
        self.ceiling = failed_at
        self._hold_until = now + self._hold
        self._probes = 0
        self.limit = new
        self.reason = reason
        self.epoch += 1
        return True

    def _maybe_update(self, now: float) -> None:
        last = self._last_update
        if last is None:
            self._last_update = now
            return
        elapsed = now - last
        if elapsed >= INTERVAL or (self._completions >= COMPLETIONS and elapsed >= MIN_INTERVAL):
            self.update(now)

    def update(self, now: float) -> None:
        """Close an interval: latency check, probing or shrinking; called by completions."""
        short = statistics.median(self._rtts) if self._rtts else None
        long = self._long
        if short is not None:
            if long is None:
                self._long = short
            else:
                weight = LONG_DOWN if short < long else LONG_UP
                self._long = long + weight * (short - long)
        if self._problems:
            pass  # the cut already happened
        elif short is not None and long is not None and short > long * RTT_TOLERANCE:
            self.ceiling = self.limit if self.ceiling is None else min(self.ceiling, self.limit)
            self._hold_until = now + self._hold
            self.limit = max(float(self.minimum), self.limit * LATENCY_DECREASE)
            self.reason = "latency"
            self.epoch += 1
        elif self._bound:
            last = self._last_update
            elapsed = now - last if last is not None else 0.0
            rate = self._successes / elapsed if elapsed > 0 else 0.0
            queueing = short is not None and long is not None and short > long * STARTUP_RTT
            self._grow(now, rate, queueing)
        elif self._peak * 2 < self.limit and self._completions:
            self.limit = max(float(self.minimum), self.limit * 0.9, float(self._peak * 2))
            self.reason = "idle"
        self._rtts.clear()
        self._bound = self._problems = False
        self._peak = 0
        self._completions = self._successes = 0
        self._last_update = now

    def _grow(self, now: float, rate: float, queueing: bool) -> None:
        limit, ceiling = self.limit, self.ceiling
        if ceiling is None:  # slow start, while it pays
            if queueing or rate < self._best_rate * STARTUP_GAIN:
                self._flat += 1
                if queueing or self._flat >= FLAT_ROUNDS:  # full: probe slowly from here
                    self.ceiling = limit + 1
                    self._hold_until = now + self._hold
                    self.reason = "hold"
                    return
            else:
                self._flat = 0
            self._best_rate = max(self._best_rate, rate)
            new = limit * 2
        elif limit + 1 < ceiling:
            new = min(ceiling - 1, limit + max(1.0, (ceiling - 1 - limit) / 2))
        elif now >= self._hold_until:
            if limit >= ceiling:  # the last probe held: the ceiling was higher
                self._probes += 1
                self.ceiling = ceiling = limit + 1
                if self._probes >= PROBES_TO_FORGET:
                    self.ceiling = None
                    self._best_rate, self._flat = 0.0, 0
            new = limit + 1
        else:
            self.reason = "hold"
            return
        new = min(float(self.maximum), new)
        if new > limit:
            self.limit = new
            self.reason = "probing"
        else:
            self.reason = "max"
