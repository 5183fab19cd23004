"""Soak: more than a million rows through feeds that fail, stall and stop over and over.

Fifty cycles rotate through the three ways to consume (``async for``, ``get()`` from a thread, a
``BlobsQueue`` sink), async and sync fetchers, batch sizes and chunk sizes. Fetchers fail at
1 % (within the budget), return None or bad chunks now and then, crawl or hang (cancelled,
or abandoned and their late rows counted) once in a while;
the consumer stalls at random; every cycle ends with a stop in mid-stream and a new feed.
Every cycle checks every invariant; the whole run checks that no row is delivered twice,
that memory stays flat across cycles and that the run stays within its time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import psutil
import pytest

import asyncfeed as af
from asyncfeed.sinks import BlobsQueue
from tests.reliability.faults import (
    CounterSource,
    FaultyFetcher,
    assert_clean_end,
    join_threads,
    timed,
)

ROWS = 2_000_000
CYCLES = 50
BUDGET_S = 60.0
SOURCE = "soak"


@dataclass
class Soak:
    """What the whole run delivered, injected and measured."""

    marks: np.ndarray = field(default_factory=lambda: np.zeros(4 << 20, np.uint8))
    rows: int = 0
    batches: int = 0
    stalls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    stops: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    peak_rss: int = 0

    def take(self, ids: np.ndarray, x: np.ndarray, batch_size: int, partial_ok: bool) -> None:
        """One delivered batch: exact size, rows self-consistent, each id never seen before."""
        assert ids.shape == (batch_size,) or partial_ok, ids.shape
        assert x.shape == (ids.shape[0], 4)
        assert np.array_equal(x, np.repeat(ids.astype(np.float32)[:, None], 4, axis=1))
        if ids.max() >= self.marks.shape[0]:
            self.marks = np.concatenate([self.marks, np.zeros_like(self.marks)])
        assert not self.marks[ids].any(), "a row was delivered twice"
        self.marks[ids] = 1
        self.rows += ids.shape[0]
        self.batches += 1
        if self.batches % 64 == 0:
            self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)


def make_feed(
    cycle: int, counter: CounterSource, soak: Soak, sink: BlobsQueue | None
) -> tuple[af.Feed, FaultyFetcher, int]:
    rng = random.Random(cycle)
    fetcher = FaultyFetcher(
        counter,
        seed=cycle,
        rates={"raise": 0.01, "none": 0.02, "bad": 0.002, "slow": 0.001},
        rows=(1, rng.choice([16, 64, 256])),
        slow_s=0.002,
    )
    fetcher.at = {0: "ok", rng.randrange(50, 1000): "hang"}  # one worker of 2+ hangs
    batch_size = rng.choice([64, 128, 256, 500])
    flavour = "async" if cycle % 3 != 1 else "sync"
    feed = af.Feed(
        fetcher.fetch(flavour),
        blobs=counter.blobs,
        batch_size=batch_size,
        concurrency=rng.choice([2, 4, 8]),
        source=SOURCE,
        max_errors=10**6,
        max_buffered_chunks=rng.choice([16, 64, 800]),
        log_interval=None,
        sink=sink,
    )
    return feed, fetcher, batch_size


def stall(rng: random.Random, soak: Soak) -> float:
    """A random consumer stall (1 % of batches, up to 3 ms): the system under test."""
    if rng.random() < 0.01:
        soak.stalls += 1
        return rng.uniform(0.0005, 0.003)
    return 0.0


async def run_async(feed: af.Feed, batch_size: int, target: int, soak: Soak, seed: int) -> None:
    rng = random.Random(seed)
    start = soak.rows
    async with feed:
        async for batch in feed:
            soak.take(batch["ids"], batch["x"], batch_size, False)
            if pause := stall(rng, soak):
                await asyncio.sleep(pause)
            if soak.rows - start >= target:
                began = time.monotonic()
                break
    soak.stops.append(time.monotonic() - began)


def run_get(feed: af.Feed, batch_size: int, target: int, soak: Soak, seed: int) -> None:
    rng = random.Random(seed)
    start = soak.rows
    feed.start()
    while soak.rows - start < target:
        batch = feed.get(timeout=10)
        soak.take(batch["ids"], batch["x"], batch_size, False)
        if pause := stall(rng, soak):
            time.sleep(pause)
    began = time.monotonic()
    feed.stop()
    soak.stops.append(time.monotonic() - began)


def run_sink(feed: af.Feed, q: BlobsQueue, batch_size: int, target: int, soak: Soak) -> None:
    rng = random.Random(target)
    start = soak.rows
    feed.start()
    while soak.rows - start < target:
        record = q.dequeue(timeout=10)
        assert record is not None
        ids, x = record
        soak.take(ids, x, batch_size, False)
        if pause := stall(rng, soak):
            time.sleep(pause)
    began = time.monotonic()
    feed.stop()
    soak.stops.append(time.monotonic() - began)
    while (record := q.dequeue(timeout=10)) is not None:  # accepted before the stop
        ids, x = record
        soak.take(ids, x, batch_size, False)


@pytest.mark.soak
@pytest.mark.timeout(120)
def test_soak_millions_of_rows_through_faults_stalls_and_stops() -> None:
    counter = CounterSource()
    soak = Soak()
    process = psutil.Process()
    per_cycle = ROWS // CYCLES + 1
    start_rss = process.memory_info().rss
    began = time.monotonic()
    for cycle in range(CYCLES):
        kind = ("async", "get", "sink")[cycle % 3]
        q = BlobsQueue(capacity=4, num_blobs=2) if kind == "sink" else None
        feed, fetcher, batch_size = make_feed(cycle, counter, soak, q)
        delivered_before = soak.rows
        with timed(BUDGET_S):
            if kind == "async":
                asyncio.run(run_async(feed, batch_size, per_cycle, soak, cycle))
            elif kind == "get":
                run_get(feed, batch_size, per_cycle, soak, cycle)
            else:
                assert q is not None
                run_sink(feed, q, batch_size, per_cycle, soak)
        fetcher.release()  # hung sync calls return late, after the stop
        join_threads(f"asyncfeed-{SOURCE}-")  # abandoned sync calls settle their late rows
        stats = assert_clean_end(feed, causes={"stop", "abandoned"})
        assert stats.rows_delivered == soak.rows - delivered_before
        assert fetcher.injected["raise"] + fetcher.injected["bad"] >= stats.fetch_errors
        soak.faults.update(fetcher.injected)
        soak.faults["errors counted"] += stats.fetch_errors
        soak.faults["none counted"] += stats.fetch_none
        soak.rss.append(process.memory_info().rss)
    elapsed = time.monotonic() - began
    assert int(soak.marks.sum()) == soak.rows >= ROWS
    assert soak.faults["errors counted"] > CYCLES and soak.stalls > CYCLES
    assert soak.rows <= counter.issued  # every delivered row was fetched, once
    assert max(soak.stops) <= 2.0, soak.stops
    # memory stays flat: after the first cycles warmed up, no growth beyond a fixed margin
    growth = max(soak.rss[2:]) - soak.rss[1]
    assert growth < 32 << 20, f"RSS grew by {growth >> 20} MiB across cycles"
    # the peak stays within the buffers (at most 800 chunks of 256 rows of 24 bytes, a few
    # batches, the id marks) plus a fixed margin
    buffers = 800 * 256 * 24 + 8 * 500 * 24 + soak.marks.nbytes
    assert soak.peak_rss - start_rss < buffers + (48 << 20), soak.peak_rss - start_rss
    assert elapsed < BUDGET_S, f"soak took {elapsed:.1f} s"
    figures = (
        f"soak: {soak.rows:,} rows in {soak.batches:,} batches, {CYCLES} feeds, "
        f"{elapsed:.1f} s, faults {dict(soak.faults)}, stalls {soak.stalls}, "
        f"slowest stop {max(soak.stops) * 1e3:.0f} ms, peak RSS {soak.peak_rss >> 20} MiB "
        f"(+{(soak.peak_rss - start_rss) >> 20} MiB over the start)"
    )
    print(figures)
