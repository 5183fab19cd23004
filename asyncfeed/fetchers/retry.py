"""Retry policy for HTTP fetches: bounded attempts, exponential backoff with jitter.

Retried: connection errors (refused, reset, reset mid-body), timeouts, HTTP 5xx and 429.
Not retried: other 4xx, a body over the size limit, a wrong content type, undecodable bytes.
A ``Retry-After`` header (seconds or an HTTP date) on a 429 or 503 sets the wait, capped at
``max_delay``.
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
    """True for statuses worth another attempt: 429 and every 5xx."""
    return status == 429 or 500 <= status <= 599


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


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how long to wait before trying a failed request again.

    Args:
        attempts: requests per fetch at most, the first included (1: never retry).
        backoff: wait before the second attempt, in seconds; doubles for each later one.
        max_delay: cap on any wait, backoff or ``Retry-After``, in seconds.
        jitter: fraction of each backoff wait that is random (0: none, 1: full jitter), so
            that workers failing together do not retry together.

    Raises:
        ConfigError: for any invalid argument.
    """

    attempts: int = 4
    backoff: float = 0.1
    max_delay: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {self.attempts}")
        for name in ("backoff", "max_delay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 1
        ):
            raise ConfigError(f"jitter must be a number in [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base = min(self.backoff * 2.0 ** (attempt - 1), self.max_delay)
        return base * (1.0 - self.jitter * random.random())
