"""``processes=N`` benchmarks: chunk transport cost, shared-memory ring vs socket, 1 vs 2 workers.

Workloads (fetchers hand out slices of preallocated arrays, so what is measured is the
feed and the transport, not the data's making):

- ``rebatch``: chunks of 1-200 rows of float32[3, 64, 64] (48 KiB a row), batch 64;
- ``small``: chunks of 1-8 rows of (int64, float32[4]), batch 32 - per-call overhead;
- ``sized``: fixed chunks of a given byte size, to place the inline/ring threshold;
- ``gil``: one 256x256x3 uint8 image per call after about 1 ms of pure-Python work, the
  shape of the http workload (parsing and bookkeeping hold the GIL): the case ``processes``
  is for, scaling with the cores where one event loop cannot.

Each run reports rows/s, the CPU time the feed's process spends per row (all its threads)
and that of the worker processes; with workers, the feed's CPU per row against the
in-process run is what the transport costs the process that consumes the batches.

``run_suite()`` is what ``make bench`` calls; ``python benchmarks/procs_bench.py`` prints
the tables (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil

import asyncfeed as af
from asyncfeed.procs import ring as wire

_ROWS = np.random.default_rng(0).integers(1, 201, 4096)
_SMALL_ROWS = np.random.default_rng(1).integers(1, 9, 4096)
_IMAGES: np.ndarray | None = None
_serial: dict[int, int] = {}


def _images() -> np.ndarray:
    global _IMAGES
    if _IMAGES is None:
        _IMAGES = np.random.default_rng(2).random((200, 3, 64, 64), np.float32)
    return _IMAGES


def _next(worker_id: int) -> int:
    n = _serial.get(worker_id, 0)
    _serial[worker_id] = n + 1
    return n


async def rebatch_fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    rows = int(_ROWS[_next(worker_id) % len(_ROWS)])
    return [_images()[:rows], np.arange(rows, dtype=np.int64)]


_SMALL_X = np.ones((8, 4), np.float32)
_SMALL_IDS = np.arange(8, dtype=np.int64)


async def small_fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    rows = int(_SMALL_ROWS[_next(worker_id) % len(_SMALL_ROWS)])
    return [_SMALL_X[:rows], _SMALL_IDS[:rows]]


_IMAGE = np.zeros((1, 256, 256, 3), np.uint8)
GIL_WORK = 30_000  # loop iterations, about 1 ms of Python


async def gil_fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    n = _next(worker_id)
    acc = 0
    for i in range(GIL_WORK):
        acc += i * i
    return [_IMAGE, np.array([n + acc % 2], np.int64)]


class SizedFetch:
    """Chunks of 8 rows totalling ``nbytes``."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._x: np.ndarray | None = None

    async def __call__(self, worker_id: int, batch_size: int) -> list[np.ndarray]:
        if self._x is None:
            self._x = np.ones((8, max(1, self.nbytes // 32)), np.float32)
        return [self._x, _SMALL_IDS]


@dataclass(frozen=True)
class Result:
    workload: str
    processes: int | None
    transport: str
    rows_per_s: float
    feed_cpu_us_per_row: float
    workers_cpu_us_per_row: float
    rows: int
    seconds: float


@contextmanager
def transport(kind: str) -> Iterator[None]:
    """``auto`` (the default), ``ring`` (every chunk through shared memory), ``inline``."""
    saved = wire.INLINE_MAX_BYTES, wire.RING_BYTES
    if kind == "ring":
        wire.INLINE_MAX_BYTES = 0
    elif kind == "inline":
        wire.RING_BYTES = 0
    try:
        yield
    finally:
        wire.INLINE_MAX_BYTES, wire.RING_BYTES = saved


def _workers_cpu(workers: list[psutil.Process]) -> float:
    total = 0.0
    for w in workers:
        with contextlib.suppress(psutil.Error):
            t = w.cpu_times()
            total += t.user + t.system
    return total


async def _measure(feed: af.Feed, seconds: float, warmup: int) -> tuple[int, float, float, float]:
    async with feed:
        for _ in range(warmup):  # workers started and serving
            await anext(feed)
        workers = [
            c
            for c in psutil.Process().children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        rows = 0
        worker_cpu = _workers_cpu(workers)
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            batch = await anext(feed)
            rows += batch.rows
            if time.perf_counter() >= deadline:
                break
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        worker_cpu = _workers_cpu(workers) - worker_cpu
    return rows, wall, cpu, worker_cpu


def bench(
    workload: str,
    processes: int | None,
    kind: str = "auto",
    *,
    seconds: float = 3.0,
    nbytes: int = 0,
    concurrency: int = 8,
) -> Result:
    """One measurement; ``kind`` only matters with ``processes``."""
    fetch: Any
    if workload == "rebatch":
        fetch, blobs, batch = rebatch_fetch, ["x", "ids"], 64
    elif workload == "small":
        fetch, blobs, batch = small_fetch, ["x", "ids"], 32
    elif workload == "gil":
        fetch, blobs, batch = gil_fetch, ["x", "ids"], 32
    else:
        fetch, blobs, batch = SizedFetch(nbytes), ["x", "ids"], 64
    with transport(kind):
        feed = af.Feed(
            fetch,
            blobs=blobs,
            batch_size=batch,
            concurrency=concurrency,
            max_buffered_chunks=64,
            processes=processes,
            log_interval=None,
        )
        rows, wall, cpu, worker_cpu = asyncio.run(_measure(feed, seconds, warmup=5))
    name = workload if workload != "sized" else f"sized {nbytes // 1024} KiB"
    return Result(
        name,
        processes,
        kind if processes else "-",
        rows / wall,
        cpu / rows * 1e6,
        worker_cpu / rows * 1e6,
        rows,
        wall,
    )


def run_suite(seconds: float = 3.0) -> list[Result]:
    """The ``make bench`` entry: in-process vs ``processes`` 1 and 2, ring vs inline."""
    results = [bench("gil", p, seconds=seconds, concurrency=16) for p in (None, 1, 2)]
    for workload in ("rebatch", "small"):
        results.append(bench(workload, None, seconds=seconds))
        for processes in (1, 2):
            for kind in ("auto", "ring", "inline"):
                results.append(bench(workload, processes, kind, seconds=seconds))
    for nbytes in (4096, 16384, 65536, 262144):
        for kind in ("ring", "inline"):
            results.append(bench("sized", 1, kind, seconds=seconds, nbytes=nbytes))
    return results


def _table(results: list[Result]) -> str:
    lines = [
        f"{'workload':<16} {'processes':>9} {'transport':>9} {'rows/s':>12} "
        f"{'feed CPU us/row':>16} {'workers CPU us/row':>19}"
    ]
    for r in results:
        lines.append(
            f"{r.workload:<16} {r.processes or '-':>9} {r.transport:>9} "
            f"{r.rows_per_s:>12,.0f} {r.feed_cpu_us_per_row:>16.2f} "
            f"{r.workers_cpu_us_per_row:>19.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = run_suite(1.0 if args.quick else args.seconds)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
