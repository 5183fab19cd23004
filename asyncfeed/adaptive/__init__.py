"""Adaptive fetch concurrency: the option group and the pure control logic behind it.

``concurrency=af.Adaptive(min=1, max=512)`` asks the feed to choose its fetch concurrency,
and the HTTP fetcher to limit each host on its own. Everything here is pure (the time is an
argument, nothing waits or locks), so the control law is tested without a network or a clock:

- ``options.py``: :class:`Adaptive`, the option group.
- ``limiter.py``: :class:`ConcurrencyLimiter`, a host's concurrency limit (multiplicative
  decrease on 429/503/timeouts, latency gradient, probing back up).
- ``rate.py``: :class:`RateLimiter`, a host's request rate (token bucket, cubic recovery).
- ``host.py``: :class:`HostPolicy`, both of them and the ``Retry-After`` pause for one host.
- ``demand.py``: :class:`DemandEstimator`, the feed-level limit by Little's law, and the
  decode-bound check.
- ``meter.py``: the measuring instruments they share.
"""

from .demand import Decision, DemandEstimator, DemandSample, UpdateClock, decode_bound, littles_law
from .host import HostPolicy, Outcome
from .limiter import ConcurrencyLimiter, Ticket
from .meter import RateMeter, ServedWindow
from .options import Adaptive
from .rate import RateLimiter

__all__ = [
    "Adaptive",
    "ConcurrencyLimiter",
    "Decision",
    "DemandEstimator",
    "DemandSample",
    "HostPolicy",
    "Outcome",
    "RateLimiter",
    "RateMeter",
    "ServedWindow",
    "Ticket",
    "UpdateClock",
    "decode_bound",
    "littles_law",
]
