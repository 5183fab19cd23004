"""``RayActors``: what a Ray call costs the feed's process, and the ``keys_per_call`` default.

One local Ray (started by the feed, as a user with no cluster gets it), ``RayActors(2)``,
a keyed async fetcher that waits ``--latency-ms`` (an I/O call) and returns one row of
``--row-kib`` KiB. For each concurrency and ``keys_per_call`` it reports rows/s and the CPU
the feed's process (the driver: its loop and Ray's threads in it) spends per row, after a
warm-up. The cost of one actor call is shared by the keys it carries; the default
(``asyncfeed.ray.options.KEYS_PER_CALL``) is the smallest value past which the driver's CPU
per row stops falling much.

``python -m benchmarks.ray_bench`` prints the table (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import asyncfeed as af


@dataclass(frozen=True)
class Latent:
    """``fetch_one(key)``: ``latency`` seconds of waiting, then one row of ``nbytes``."""

    latency: float
    nbytes: int

    async def __call__(self, key: int) -> list[np.ndarray]:
        await asyncio.sleep(self.latency)
        return [np.array([key], np.int64), np.zeros((1, self.nbytes), np.uint8)]


async def _one(
    concurrency: int, keys_per_call: int, fetch: Latent, seconds: float
) -> dict[str, Any]:
    feed = af.Feed.from_keys(
        iter(range(10**9)),
        fetch,
        blobs=["ids", "data"],
        batch_size=32,
        concurrency=concurrency,
        workers=af.RayActors(2, keys_per_call=keys_per_call),
        log_interval=None,
    )
    async with feed:
        rows = 0
        warm = time.perf_counter() + seconds / 3
        async for batch in feed:  # warm-up: actors started, sessions made
            rows += batch.rows
            if time.perf_counter() >= warm:
                break
        start, cpu, rows = time.perf_counter(), time.process_time(), 0
        async for batch in feed:
            rows += batch.rows
            if time.perf_counter() - start >= seconds:
                break
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "concurrency": concurrency,
        "keys_per_call": keys_per_call,
        "rows_per_s": rows / wall,
        "driver_cpu_us_per_row": 1e6 * cpu / rows,
    }


def run(
    concurrencies: tuple[int, ...], per_call: tuple[int, ...], fetch: Latent, seconds: float
) -> list[dict[str, Any]]:
    """Every (concurrency, keys_per_call), each in a feed of its own on one local Ray."""

    async def main() -> list[dict[str, Any]]:
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING")  # one Ray for every run
        try:
            return [await _one(c, k, fetch, seconds) for c in concurrencies for k in per_call]
        finally:
            ray.shutdown()

    return asyncio.run(main())


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| concurrency | keys_per_call | rows/s | driver CPU µs/row |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['concurrency']} | {r['keys_per_call']} | {r['rows_per_s']:.0f} | "
            f"{r['driver_cpu_us_per_row']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_bench")
    parser.add_argument("--quick", action="store_true", help="short windows")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--row-kib", type=int, default=192)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    fetch = Latent(args.latency_ms / 1000, args.row_kib * 1024)
    seconds = 1.5 if args.quick else 4.0
    results = run((64, 256), (1, 4, 16, 32, 64), fetch, seconds)
    print(table(results))


if __name__ == "__main__":
    main()
