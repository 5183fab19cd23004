"""``Adaptive(min, max, start)``: the option group that makes fetch concurrency adapt.

``Feed(..., concurrency=af.Adaptive(min=1, max=512))`` lets the feed choose how many fetch
calls it keeps in flight (a plain int keeps a fixed number), and makes the ready HTTP
fetcher limit each host's concurrency and request rate on its own. See ``asyncfeed.adaptive``
for the control law.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ..errors import ConfigError

__all__ = ["DEFAULT_START", "MAX_CONCURRENCY", "Adaptive"]

#: The most fetch calls a feed may keep in flight (the bound of a plain ``concurrency``).
MAX_CONCURRENCY: Final = 65536
#: Where the limit starts when ``start`` is not given (clamped to ``[min, max]``).
DEFAULT_START: Final = 16


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    return value


@final
@dataclass(frozen=True, slots=True)
class Adaptive:
    """Fetch concurrency chosen by the feed, between ``min`` and ``max``.

    Args:
        min: fetch calls kept in flight at least (>= 1).
        max: fetch calls in flight at most (<= 65536); also the most requests the HTTP
            fetcher sends to one host at once.
        start: where the limit starts; default :data:`DEFAULT_START` clamped to
            ``[min, max]``.

    Raises:
        ConfigError: a bound is not an int, ``min < 1``, ``max < min``, ``max > 65536``,
            or ``start`` lies outside ``[min, max]``.
    """

    min: int = 1
    max: int = 512
    start: int | None = None

    def __post_init__(self) -> None:
        low = _int("min", self.min)
        high = _int("max", self.max)
        if low < 1:
            raise ConfigError(f"min must be >= 1, got {low}")
        if high < low:
            raise ConfigError(f"max must be >= min ({low}), got {high}")
        if high > MAX_CONCURRENCY:
            raise ConfigError(f"max must be <= {MAX_CONCURRENCY}, got {high}")
        if self.start is not None:
            start = _int("start", self.start)
            if not low <= start <= high:
                raise ConfigError(
                    f"start must be between min ({low}) and max ({high}), got {start}"
                )

    @property
    def initial(self) -> int:
        """The limit to start from: ``start``, else :data:`DEFAULT_START` within the bounds."""
        if self.start is not None:
            return self.start
        return max(self.min, min(self.max, DEFAULT_START))

    def clamp(self, value: float) -> int:
        """``value`` rounded down and brought within ``[min, max]``."""
        return max(self.min, min(self.max, int(value)))
