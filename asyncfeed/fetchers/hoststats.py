"""Per-host request statistics: counts by status class, latency histogram, in flight, rate.

Updated on the fetcher's event loop, read from any thread (``Feed.stats()``), so updates and
snapshots hold one lock; each takes well under a microsecond. Latency percentiles are taken
over the last :data:`LATENCY_WINDOW` requests of each host; the latency histogram counts
every request since the start, in the fixed buckets of :data:`LATENCY_BUCKETS`.

A snapshot gives, per host (``"host"`` or ``"host:port"``):

- ``requests``: requests sent and ended (answered, or failed without an answer);
  ``status``: the same by class, ``"2xx"`` … ``"5xx"``, and ``"error"`` for no answer
  (connection errors, timeouts); ``bytes``: body bytes received;
- ``retries`` and ``retries_by_reason``: failed requests sent again, by why they failed
  (``"http_429"``, ``"timeout"``, ``"connection"``…); ``errors``: failures by kind;
- ``latency_buckets`` (cumulative counts of requests that took at most each bound of
  :data:`LATENCY_BUCKETS`, then all of them), ``latency_sum`` (seconds), ``latency_count``,
  and ``latency_p50`` / ``latency_p99`` over the recent window;
- ``inflight``: requests in flight now; ``rate``: requests sent per second, smoothed over
  about a second; ``held``: requests held back now (retry backoff, ``Retry-After``, an
  adaptive limit or rate) and ``held_s``, the seconds all requests were held so far;
- with an adaptive fetcher: ``limit`` (requests in flight allowed), ``limit_reason``,
  ``rate_limit`` (requests/s, ``inf``: none), ``rate_limit_reason``.

:func:`merge_host_stats` merges the snapshots of several fetchers (worker processes,
actors). Each process's limiter governs its own share of a host's load, so what the host
sees is their sum: limits, rates, in-flight and held counts add up, like every counter and
histogram bucket; percentiles take the largest; a reason takes the most pressing one
(``paused`` before ``throttled`` before ``timeout``, ``latency``, ``hold``, ``probing``…).
"""

from __future__ import annotations

import bisect
import itertools
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

import numpy as np

from ..adaptive.meter import RateMeter

__all__ = [
    "CODE_CLASSES",
    "LATENCY_BUCKETS",
    "LATENCY_WINDOW",
    "HostStats",
    "code_class",
    "merge_host_stats",
]

LATENCY_WINDOW: Final = 2048
#: Upper bounds, in seconds, of the latency histogram's buckets (a last one is unbounded).
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Status classes, ``"error"`` being no answer at all (connection error, timeout).
CODE_CLASSES: Final = ("2xx", "3xx", "4xx", "5xx", "error")
_PEAK: Final = re.compile(r"(^|_)(p\d+|max|peak)(_|$)")
_PRESSING: Final = (
    "paused",
    "throttled",
    "timeout",
    "latency",
    "hold",
    "idle",
    "max",
    "probing",
    "start",
    "unlimited",
)


def code_class(status: int | None) -> str:
    """``"2xx"``… for an HTTP status (1xx counts as 2xx), ``"error"`` for None."""
    if status is None:
        return "error"
    return CODE_CLASSES[min(max(status // 100, 2), 5) - 2]


@final
class _Host:
    __slots__ = (
        "buckets",
        "bytes",
        "errors",
        "held",
        "held_s",
        "inflight",
        "latencies",
        "latency_sum",
        "meter",
        "requests",
        "retries",
        "retry_reasons",
        "status",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.retry_reasons: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.inflight = 0
        self.held = 0
        self.held_s = 0.0
        self.meter = RateMeter(bucket=0.5, smoothing=0.5)

    def observe(self, latency: float, status: int | None) -> None:
        self.requests += 1
        self.status[code_class(status)] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency


@final
class HostStats:
    """Thread-safe counters per host (``"host"`` or ``"host:port"``)."""

    __slots__ = ("_hosts", "_limits", "_lock")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._limits: dict[str, Any] = {}

    def _host(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        return entry

    def sent(self, host: str) -> None:
        """A request to ``host`` is going out now: one more in flight."""
        now = time.monotonic()
        with self._lock:
            entry = self._host(host)
            entry.inflight += 1
            entry.meter.add(now)

    def ended(self, host: str) -> None:
        """A request counted by :meth:`sent` ended (before :meth:`request` or :meth:`failed`)."""
        with self._lock:
            self._host(host).inflight -= 1

    def held(self, host: str, delta: int, seconds: float = 0.0) -> None:
        """``delta`` more (or fewer) requests held back; add ``seconds`` of holding."""
        with self._lock:
            entry = self._host(host)
            entry.held += delta
            entry.held_s += seconds

    def request(self, host: str, latency: float, nbytes: int, status: int | None = 200) -> None:
        """Count one request that got a response (any status), its latency and body size."""
        with self._lock:
            entry = self._host(host)
            entry.observe(latency, status)
            entry.bytes += nbytes
            entry.latencies.append(latency)

    def failed(
        self,
        host: str,
        kind: str,
        *,
        retried: bool,
        responded: bool,
        latency: float = 0.0,
    ) -> None:
        """Count one failed attempt by kind; ``responded=False`` counts it as a request too
        (of class ``"error"``, lasting ``latency`` seconds)."""
        with self._lock:
            entry = self._host(host)
            if not responded:
                entry.observe(latency, None)
            entry.errors[kind] += 1
            if retried:
                entry.retries += 1
                entry.retry_reasons[kind] += 1

    def set_limits(self, host: str, limits: Mapping[str, Any]) -> None:
        """Record ``host``'s adaptive limits (``limit``, ``rate_limit``, their reasons)."""
        with self._lock:
            self._limits[host] = dict(limits)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per host, the figures listed in the module's docstring.

        Latencies are in seconds (0.0 before the first response).
        """
        now = time.monotonic()
        with self._lock:
            items = [
                (
                    host,
                    {
                        "requests": e.requests,
                        "bytes": e.bytes,
                        "retries": e.retries,
                        "errors": dict(e.errors),
                        "retries_by_reason": dict(e.retry_reasons),
                        "status": {c: e.status.get(c, 0) for c in CODE_CLASSES},
                        "latency_buckets": list(itertools.accumulate(e.buckets)),
                        "latency_sum": e.latency_sum,
                        "latency_count": sum(e.buckets),
                        "inflight": e.inflight,
                        "rate": e.meter.rate(now),
                        "held": e.held,
                        "held_s": e.held_s,
                        **self._limits.get(host, {}),
                    },
                    list(e.latencies),
                )
                for host, e in self._hosts.items()
            ]
        out: dict[str, dict[str, Any]] = {}
        for host, values, latencies in items:
            p50 = p99 = 0.0
            if latencies:
                p50, p99 = (float(v) for v in np.percentile(latencies, [50, 99]))
            values["latency_p50"] = p50
            values["latency_p99"] = p99
            out[host] = values
        return out

    def totals(self) -> Mapping[str, int]:
        """Requests, bytes, retries, errors and requests in flight summed over every host."""
        with self._lock:
            hosts = list(self._hosts.values())
            return {
                "requests": sum(e.requests for e in hosts),
                "bytes": sum(e.bytes for e in hosts),
                "retries": sum(e.retries for e in hosts),
                "errors": sum(sum(e.errors.values()) for e in hosts),
                "inflight": sum(e.inflight for e in hosts),
                "held": sum(e.held for e in hosts),
            }


def merge_host_stats(
    sources: Iterable[Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Per-host stats from several fetchers (worker processes, actors), merged into one.

    Numbers are summed (counters, in-flight counts, limits and rates: see the module's
    docstring), except names such as ``p99``, ``max`` or ``peak`` (``latency_p99``...),
    which take the largest; lists of numbers of one length (histogram buckets) are summed
    item by item; dicts (errors by kind) are merged key by key; reasons (names ending in
    ``reason``) take the most pressing; other values the last seen.
    """
    merged: dict[str, dict[str, Any]] = {}
    for hosts in sources:
        for host, values in hosts.items():
            into = merged.setdefault(host, {})
            for name, value in values.items():
                into[name] = _merge(name, into.get(name), value)
    return merged


def _merge(name: str, old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):  # e.g. errors by kind: merge per key
        merged = dict(old)
        for key, value in new.items():
            merged[key] = _merge(str(key), merged.get(key), value)
        return merged
    if isinstance(old, list | tuple) and isinstance(new, list | tuple) and len(old) == len(new):
        return [_merge(name, a, b) for a, b in zip(old, new, strict=True)]
    if name.endswith("reason") and isinstance(old, str) and isinstance(new, str):
        return min(old, new, key=_pressing)
    numbers = (int, float)
    if old is None or not isinstance(old, numbers) or not isinstance(new, numbers):
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        return new
    return max(old, new) if _PEAK.search(name) else old + new


def _pressing(reason: str) -> int:
    return _PRESSING.index(reason) if reason in _PRESSING else len(_PRESSING)
