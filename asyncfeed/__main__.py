"""Command line: ``python -m asyncfeed demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import numpy as np

from .feed import Feed


def _synthetic_fetcher(rows_per_chunk: int) -> object:
    counter = [0]

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)  # stands in for network I/O
        start = counter[0]
        counter[0] += rows_per_chunk
        ids = np.arange(start, start + rows_per_chunk, dtype=np.int64)
        images = np.random.default_rng(start).random((rows_per_chunk, 3, 32, 32), np.float32)
        return [images, ids]

    return fetch


async def _demo(args: argparse.Namespace) -> int:
    feed = Feed(
        _synthetic_fetcher(args.chunk_rows),  # type: ignore[arg-type]
        blobs=["data", "label"],
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        log_interval=None,
    )
    deadline = time.monotonic() + args.seconds
    rows = batches = 0
    checksum = 0.0
    start = time.monotonic()
    async with feed:
        async for batch in feed:
            rows += batch.rows
            batches += 1
            checksum += float(batch["data"].mean())
            if time.monotonic() >= deadline:
                break
    elapsed = time.monotonic() - start
    stats = feed.stats()
    print(f"asyncfeed demo: synthetic source, {elapsed:.1f} s")
    print(f"  rows      {rows}")
    print(f"  batches   {batches} of {args.batch_size}")
    print(f"  rows/s    {rows / elapsed:,.0f}")
    print(f"  dropped   {stats.rows_dropped} (rows in flight at stop)")
    print(f"  checksum  {checksum / max(batches, 1):.4f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncfeed")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="stream a built-in source for a few seconds")
    demo.add_argument("--seconds", type=float, default=10.0)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--concurrency", type=int, default=16)
    demo.add_argument("--chunk-rows", type=int, default=7)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo(args))
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
