"""Retry policy for HTTP fetches: bounded in attempts and in time, capped backoff, full jitter.

Retried: connection errors (refused, reset, reset mid-body), timeouts, HTTP 408, 429 and 5xx.
Not retried: every other 4xx, a body over the size limit, a wrong content type, undecodable
bytes.

The defaults are made for long training runs: waits of ``uniform(0, min(max_delay, backoff
* 2 ** (n - 1)))`` (exponential, capped, full jitter so that workers failing together do not
retry together) for up to ``deadline`` = 60 s after the first attempt, so a feed rides out a
server restart or a short network outage instead of failing or spending its error budget in
a second. A ``Retry-After`` header (seconds or an HTTP date, on any retried status) sets the
wait instead; one that would end past the deadline ends the retries at once.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Retry", "parse_retry_after", "retryable_status"]


def retryable_status(status: int) -> bool:
    """True for statuses worth another attempt: 408, 429 and every 5xx."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from a ``Retry-After`` value (delta seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _number(name: str, value: object, *, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how long to wait before trying a failed request again.

    Args:
        attempts: requests per fetch at most, the first included (1: never retry).
        backoff: the first wait's upper bound, in seconds; it doubles for each later one.
        max_delay: cap on the backoff's upper bound, in seconds (not on ``Retry-After``).
        jitter: fraction of each wait that is random: 1 (default) waits
            ``uniform(0, bound)`` ("full jitter"), 0 waits ``bound`` exactly.
        deadline: seconds after the first attempt past which no attempt starts; the last
            wait is shortened to end on it.

    With the defaults a fetch keeps trying for about a minute (about 15 attempts), then
    raises :class:`~asyncfeed.errors.HttpError`. ``Retry(attempts=1)`` never retries.

    Raises:
        ConfigError: for any invalid argument.
    """

    attempts: int = 30
    backoff: float = 0.5
    max_delay: float = 10.0
    jitter: float = 1.0
    deadline: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {self.attempts}")
        _number("backoff", self.backoff)
        _number("max_delay", self.max_delay)
        _number("deadline", self.deadline, positive=True)
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 1
        ):
            raise ConfigError(f"jitter must be a number in [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), ignoring the
        deadline: ``retry_after`` when given, else the jittered, capped backoff."""
        if retry_after is not None:
            return max(0.0, retry_after)
        bound = min(self.backoff * 2.0 ** min(attempt - 1, 64), self.max_delay)
        return bound * (1.0 - self.jitter * random.random())

    def next_wait(
        self, attempt: int, elapsed: float, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait before another attempt, or None when the policy gives up.

        Args:
            attempt: how many attempts were made (1-based).
            elapsed: seconds since the first attempt started.
            retry_after: the server's ``Retry-After``, if it sent one.

        Gives up when ``attempts`` were made, when ``deadline`` has passed, or when
        ``retry_after`` would end past it; otherwise the wait is shortened to end by the
        deadline.
        """
        left = self.deadline - elapsed
        if attempt >= self.attempts or left <= 0:
            return None
        if retry_after is not None and retry_after > left:
            return None
        return min(self.delay(attempt, retry_after), left)
