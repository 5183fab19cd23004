"""One host's adaptive policy: its concurrency limit, its request rate and its pause.

:class:`HostPolicy` is what an HTTP fetcher asks before each request (may one go now, and if
not, for how long must it wait) and tells after it. Pure: the time is an argument, and the
fetcher's gate (``asyncfeed.fetchers.throttle``) does the waiting.

A 429 says "slower", not which limit the host enforces. The policy decides by the
concurrency it has seen the host serve: a request refused while more were in flight than the
host recently served is a concurrency signal (the concurrency limit is cut); one refused at
or under that level is a rate signal (the request rate is cut). A 503 cuts the concurrency
limit when it carries ``Retry-After`` or came above the served level; below it, a bare 503
is a server error like any other, left to the retry policy (a service failing 2 % of its
requests at random must not drive the limit to one). A timeout cuts the concurrency limit.
A ``Retry-After`` on any of them pauses every new request to the host until it has passed;
as a probe above the level that failed would cost such a pause again, the concurrency limit
then holds for at least ``PAUSE_HOLDS`` times the pause before probing it (so probing costs
at most about a fifth of the time).
Other failures say nothing about load.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Final, final

from .limiter import ConcurrencyLimiter, Ticket
from .options import Adaptive
from .rate import EPSILON, RateLimiter

__all__ = ["PAUSE_HOLDS", "HostPolicy", "Outcome"]


class Outcome(enum.Enum):
    """How a request let through by the policy ended."""

    OK = "ok"  # an answer that says nothing against the load (any status but the below)
    THROTTLED = "throttled"  # 429: the host asks for less
    UNAVAILABLE = "unavailable"  # 503: overloaded, or just failing
    TIMEOUT = "timeout"  # no answer in time
    FAILED = "failed"  # a connection error or similar: no load signal
    CANCELLED = "cancelled"  # the caller gave up (the feed stopped)


_OVERLOAD: Final = frozenset({Outcome.THROTTLED, Outcome.UNAVAILABLE, Outcome.TIMEOUT})
#: After a cut with ``Retry-After``, hold at least this many times the pause before probing.
PAUSE_HOLDS: Final = 4.0


@final
class HostPolicy:
    """Concurrency limit, rate limit and pause of one host.

    Args:
        adaptive: bounds; the host limit goes from 1 to ``adaptive.max`` and starts at
            ``adaptive.initial``. Default ``Adaptive()``.
    """

    __slots__ = ("concurrency", "paused_until", "rate", "throttles")

    def __init__(self, adaptive: Adaptive | None = None) -> None:
        bounds = adaptive if adaptive is not None else Adaptive()
        self.concurrency: Final = ConcurrencyLimiter(
            minimum=1, maximum=bounds.max, start=bounds.initial
        )
        self.rate: Final = RateLimiter()
        self.paused_until = -math.inf
        self.throttles = 0

    def delay(self, now: float, inflight: int) -> float | None:
        """Seconds before a request may go (0.0: now), or None until a request finishes.

        ``inflight``: the host's requests in flight now.
        """
        pause = self.paused_until - now
        if pause > EPSILON:
            return pause
        if inflight >= self.concurrency.allowed:
            self.concurrency.waited()
            return None
        return self.rate.delay(now)

    def start(self, now: float, inflight: int) -> Ticket:
        """A request goes now; ``inflight`` does not count it yet."""
        self.rate.take(now)
        self.concurrency.sent(inflight + 1)
        return Ticket(now, inflight + 1, self.concurrency.epoch, self.rate.epoch)

    def finish(
        self, ticket: Ticket, now: float, outcome: Outcome, retry_after: float | None = None
    ) -> None:
        """The request of ``ticket`` ended at ``now`` with ``outcome``."""
        if outcome is Outcome.OK:
            self.concurrency.succeeded(ticket, now)
            self.rate.succeeded(now)
        elif outcome in _OVERLOAD:
            if retry_after is not None and retry_after > 0:
                self.paused_until = max(self.paused_until, now + retry_after)
            served = self.concurrency.served.level(now)
            beyond = served is None or ticket.inflight > served
            if outcome is Outcome.TIMEOUT:
                self.concurrency.overloaded(ticket, now, "timeout")
                return
            self.throttles += 1
            if outcome is Outcome.THROTTLED and not beyond:
                self.rate.throttled(ticket.rate_epoch, now)
            elif outcome is Outcome.THROTTLED or retry_after is not None:
                ahead = ticket.inflight - 1  # an explicit "too many": it held those at most
                estimate = max(1, ahead) if served is None else None
                hold = PAUSE_HOLDS * retry_after if retry_after is not None else 0.0
                self.concurrency.overloaded(
                    ticket, now, "throttled", estimate=estimate, min_hold=hold
                )
            elif beyond:
                self.concurrency.overloaded(ticket, now, "throttled")

    def snapshot(self, now: float) -> dict[str, Any]:
        """``limit``, ``limit_reason``, ``rate_limit`` (requests/s; inf: none),
        ``rate_limit_reason`` and ``paused_s`` (seconds of pause left)."""
        paused = max(0.0, self.paused_until - now)
        return {
            "limit": self.concurrency.allowed,
            "limit_reason": "paused" if paused else self.concurrency.reason,
            "rate_limit": self.rate.fill,
            "rate_limit_reason": self.rate.reason,
            "paused_s": paused,
        }
