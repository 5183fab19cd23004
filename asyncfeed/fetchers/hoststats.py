"""Per-host request statistics: requests, bytes, retries, errors by kind, latency percentiles.

Updated on the fetcher's event loop, read from any thread (``Feed.stats()``), so updates and
snapshots hold one lock; each takes well under a microsecond. Latency percentiles are taken
over the last :data:`LATENCY_WINDOW` requests of each host.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

import numpy as np

__all__ = ["LATENCY_WINDOW", "HostStats", "merge_host_stats"]

LATENCY_WINDOW: Final = 2048
_PEAK: Final = re.compile(r"(^|_)(p\d+|max|peak)(_|$)")


@final
class _Host:
    __slots__ = ("bytes", "errors", "latencies", "requests", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)


@final
class HostStats:
    """Thread-safe counters per host (``"host"`` or ``"host:port"``)."""

    __slots__ = ("_hosts", "_lock")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host()
        return entry

    def request(self, host: str, latency: float, nbytes: int) -> None:
        """Count one request that got a response (any status), its latency and body size."""
        with self._lock:
            entry = self._host(host)
            entry.requests += 1
            entry.bytes += nbytes
            entry.latencies.append(latency)

    def failed(self, host: str, kind: str, *, retried: bool, responded: bool) -> None:
        """Count one failed attempt by kind; ``responded=False`` counts it as a request too."""
        with self._lock:
            entry = self._host(host)
            if not responded:
                entry.requests += 1
            entry.errors[kind] += 1
            if retried:
                entry.retries += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{host: {requests, bytes, retries, errors, latency_p50, latency_p99}}``.

        Latencies are in seconds (0.0 before the first response).
        """
        with self._lock:
            items = [
                (host, e.requests, e.bytes, e.retries, dict(e.errors), list(e.latencies))
                for host, e in self._hosts.items()
            ]
        out: dict[str, dict[str, Any]] = {}
        for host, requests, nbytes, retries, errors, latencies in items:
            p50 = p99 = 0.0
            if latencies:
                p50, p99 = (float(v) for v in np.percentile(latencies, [50, 99]))
            out[host] = {
                "requests": requests,
                "bytes": nbytes,
                "retries": retries,
                "errors": errors,
                "latency_p50": p50,
                "latency_p99": p99,
            }
        return out

    def totals(self) -> Mapping[str, int]:
        """Requests, bytes, retries and errors summed over every host."""
        with self._lock:
            hosts = list(self._hosts.values())
            return {
                "requests": sum(e.requests for e in hosts),
                "bytes": sum(e.bytes for e in hosts),
                "retries": sum(e.retries for e in hosts),
                "errors": sum(sum(e.errors.values()) for e in hosts),
            }


def merge_host_stats(
    sources: Iterable[Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Per-host stats from several fetchers (worker processes, actors), merged into one.

    Numbers are summed, except names such as ``p99``, ``max`` or ``peak``
    (``latency_p99``...), which take the largest; dicts (errors by kind) are merged key by
    key; other values the last seen.
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
    numbers = (int, float)
    if old is None or not isinstance(old, numbers) or not isinstance(new, numbers):
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        return new
    return max(old, new) if _PEAK.search(name) else old + new
