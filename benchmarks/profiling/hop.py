"""Where a key's time goes in the http workload: in-process against ``processes=N``.

Every key carries three clocks back with its row (``time.monotonic``, one clock for every
process of the machine): when its fetch started, when the body was read, when it was
decoded. The feed's process adds when the key was taken from the key iterator and when its
batch reached the consumer. With C keys in flight and X rows/s, a key holds its slot for
C / X seconds on average (Little's law); what the fetch itself took (GET + decode) is
measured in the process that ran it; the rest of the slot time is the pipeline's — for
``processes=N`` the hop to the worker and back. Also sampled every 50 ms: the feed's rows in
flight and queued, and the RSS of the process tree; and the CPU of the feed's process, of
its workers and of the image service over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from ..shared_fetch import AsyncChunks, decode
from ..workloads.http import IMAGES

__all__ = ["TimedChunks", "main", "measure"]

BATCH = 32
SAMPLE_S = 0.05


class TimedChunks(AsyncChunks):
    """The shared async fetch, returning ``[image, id, (started, read, decoded)]``."""

    async def __call__(self, key: tuple[str, int]) -> list[np.ndarray]:  # type: ignore[override]
        url, ident = key
        started = time.monotonic()
        state = self._state()
        async with state.session.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {resp.status}")
            data = await resp.read()
        read = time.monotonic()
        image = await asyncio.get_running_loop().run_in_executor(state.pool, decode, data, url)
        decoded = time.monotonic()
        return [
            image[None],
            np.array([ident], np.int64),
            np.array([[started, read, decoded]], np.float64),
        ]


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    """(CPU seconds of ``proc``, of its children)."""
    own = proc.cpu_times()
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        kids += t.user + t.system
    return own.user + own.system, kids


def _rss_mb(proc: psutil.Process) -> float:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / (1 << 20)


def _stat(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return {"mean": 1e3 * statistics.fmean(values), "p50": 1e3 * qs[4], "p90": 1e3 * qs[8]}


async def measure(
    template: str,
    concurrency: int,
    processes: int | None,
    *,
    warmup: float = 1.0,
    seconds: float = 4.0,
    service_pid: int | None = None,
    max_buffered_chunks: int | None = None,
) -> dict[str, Any]:
    """Stream the service through ``Feed.from_keys(TimedChunks)``; where each key's time went."""
    import asyncfeed as af

    taken: dict[int, float] = {}
    stop = [False]

    def keys() -> Any:
        n = 0
        while not stop[0]:
            taken[n] = time.monotonic()
            yield template.format(i=n % IMAGES), n
            n += 1

    extra: dict[str, Any] = {"processes": processes} if processes else {}
    if max_buffered_chunks is not None:
        extra["max_buffered_chunks"] = max_buffered_chunks
    fetch = TimedChunks(concurrency)
    feed = af.Feed.from_keys(
        keys(), fetch, blobs=["image", "label", "times"], batch_size=BATCH,
        concurrency=concurrency, log_interval=None, **extra,
    )  # fmt: skip
    me = psutil.Process()
    server = psutil.Process(service_pid) if service_pid else None
    rows: list[tuple[float, float, float, float, float, bool]] = []
    samples: list[tuple[float, int, int]] = []
    cpu0: tuple[float, float] = (0.0, 0.0)
    server0 = 0.0
    start = time.monotonic()
    window_start: float | None = None
    next_sample = 0.0
    async with feed:
        async for batch in feed:
            now = time.monotonic()
            if window_start is None:
                if now - start < warmup:
                    for ident in batch["label"]:
                        taken.pop(int(ident), None)
                    continue
                window_start = now
                cpu0 = _cpu(me)
                server0 = sum(server.cpu_times()[:2]) if server else 0.0
            labels, times = batch["label"], batch["times"]
            last = len(labels) - 1
            for i, (ident, t) in enumerate(zip(labels, times, strict=True)):
                rows.append((taken.pop(int(ident)), t[0], t[1], t[2], now, i == last))
            if now >= next_sample:
                s = feed.stats()
                samples.append((_rss_mb(me), int(s.rows_in_flight), int(s.rows_queued)))
                next_sample = now + SAMPLE_S
            if now - window_start >= seconds:
                break
        end = time.monotonic()
        cpu1 = _cpu(me)
        server1 = sum(server.cpu_times()[:2]) if server else 0.0
        stop[0] = True
    await fetch.aclose_all()
    secs = end - (window_start or end)
    n = len(rows)
    rate = n / secs if secs else 0.0
    get = [r[2] - r[1] for r in rows]
    dec = [r[3] - r[2] for r in rows]
    occupancy = concurrency / rate if rate else 0.0
    fetch_mean = statistics.fmean(g + d for g, d in zip(get, dec, strict=True)) if rows else 0.0
    return {
        "concurrency": concurrency,
        "processes": processes or 0,
        "max_buffered_chunks": max_buffered_chunks,
        "rows": n,
        "rows_per_s": rate,
        "slot_ms": 1e3 * occupancy,
        "fetch_ms": 1e3 * fetch_mean,
        "pipeline_ms_per_key": 1e3 * (occupancy - fetch_mean),
        "wait_ms": _stat([r[1] - r[0] for r in rows]),
        "get_ms": _stat(get),
        "decode_ms": _stat(dec),
        "back_ms": _stat([r[4] - r[3] for r in rows if r[5]]),
        "cpu_feed_process": (cpu1[0] - cpu0[0]) / secs if secs else 0.0,
        "cpu_workers": (cpu1[1] - cpu0[1]) / secs if secs else 0.0,
        "cpu_service": (server1 - server0) / secs if secs and server else None,
        "peak_rss_mb": max((s[0] for s in samples), default=0.0),
        "rows_in_flight_max": max((s[1] for s in samples), default=0),
        "rows_in_flight_mean": statistics.fmean(s[1] for s in samples) if samples else 0.0,
        "rows_queued_max": max((s[2] for s in samples), default=0),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.profiling.hop TEMPLATE C [--processes N] [--service-pid PID]``:
    print :func:`measure`'s result as JSON (run it in a fresh process, as the suite does)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling.hop")
    parser.add_argument("template")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--service-pid", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-buffered-chunks", type=int, default=None)
    args = parser.parse_args(argv)
    result = asyncio.run(
        measure(
            args.template,
            args.concurrency,
            args.processes,
            seconds=args.seconds,
            service_pid=args.service_pid,
            max_buffered_chunks=args.max_buffered_chunks,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
