"""Soak: 200 interrupt/resume cycles with injected faults lose no row and repeat none.

Jobs of three epochs over shuffled counter keys (``procs_fetchers.counter_rows``; keys
``k % 11 == 5`` fail and are skipped under the budget) run in cycles, each resumed from the
last cycle's ``state_dict()``. A cycle receives a few batches and is then interrupted one of
five ways: the loop breaks, the loop raises, the consumer task is cancelled while it waits,
another task closes the feed under the consumer, or a ``BlobsQueue`` sink's reader stops
reading (batches left in the sink were not received). Fetches are delayed at random, and now
and then stall, so completion order and what is in flight at each interruption vary. When a
job ends, its rows must be exactly one uninterrupted run's: the same sequence in key order,
the same multiset in completion order, each epoch's partial batch kept or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from tests.procs_fetchers import counter_rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CYCLES = 200
KEYS = 80
EPOCHS = 3
BATCH = 5
SEED = 11
MODES = ("break", "raise", "cancel", "close", "sink")
JOBS = ({"ordered": True, "drop_last": False}, {"ordered": False, "drop_last": False},
        {"ordered": True, "drop_last": True})  # fmt: skip

_timing = random.Random(5)


class Interrupt(Exception):
    pass


async def _nothing() -> AsyncIterator[af.Batch]:
    return
    yield


async def fetch(key: int) -> list[np.ndarray]:
    """Counter rows after a random delay; one call in 50 stalls (it is in flight when the
    cycle is interrupted, then fetched again)."""
    await asyncio.sleep(0.05 if _timing.random() < 0.02 else _timing.random() * 0.002)
    if key % 11 == 5:
        raise LookupError(f"no record {key}")
    return counter_rows(key)


def expected(job: dict[str, bool]) -> list[int]:
    out: list[int] = []
    for epoch in range(EPOCHS):
        order = np.random.default_rng([SEED, epoch]).permutation(KEYS).tolist()
        rows = [i for k in order if k % 11 != 5 for i in counter_rows(k)[0].tolist()]
        if job["drop_last"]:
            rows = rows[: len(rows) - len(rows) % BATCH]
        out += rows
    return out


def make_feed(job: dict[str, bool], state: dict[str, Any] | None, sink: bool) -> af.Feed:
    return af.Feed.from_keys(
        range(KEYS), fetch, blobs=["ids", "x"], batch_size=BATCH, concurrency=8,
        epochs=EPOCHS, shuffle=True, seed=SEED, max_errors=10_000, state=state,
        log_interval=None, sink=af.BlobsQueue(2, 2) if sink else None,
        ordered=job["ordered"], drop_last=job["drop_last"],
    )  # fmt: skip


async def cycle(
    job: dict[str, bool], state: dict[str, Any] | None, mode: str, n: int
) -> tuple[list[int], dict[str, Any]]:
    """One cycle: receive up to ``n`` batches, then interrupt by ``mode``."""
    feed = make_feed(job, state, sink=mode == "sink")
    got: list[int] = []
    if mode == "sink":
        async with feed:
            sink = feed.options.sink
            assert isinstance(sink, af.BlobsQueue)
            for _ in range(n):
                record = await sink.dequeue_async()
                if record is None:
                    break
                got += record[0].tolist()
    elif mode == "cancel":
        reached = asyncio.Event()

        async def consume() -> None:
            async with feed:
                if n == 0:
                    reached.set()
                async for batch in feed:
                    got.extend(batch["ids"].tolist())
                    if len(got) and batch.index + 1 - first >= n:
                        reached.set()
            reached.set()

        first = 0 if state is None else state["delivered"]["batches"]
        task = asyncio.create_task(consume())
        await reached.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        closing: list[asyncio.Task[None]] = []
        with contextlib.suppress(Interrupt):
            async with feed:
                taken = 0
                async for batch in _nothing() if n == 0 else feed:
                    got += batch["ids"].tolist()
                    taken += 1
                    if taken < n:
                        continue
                    if mode == "break":
                        break
                    if mode == "raise":
                        raise Interrupt
                    if not closing:  # "close": the feed is closed under the consumer
                        closing.append(asyncio.create_task(feed.aclose()))
        for task in closing:
            await task
    assert feed.state is af.FeedState.STOPPED
    return got, json.loads(json.dumps(feed.state_dict()))


async def test_200_interrupted_cycles_lose_no_row_and_repeat_none() -> None:
    rng = random.Random(3)
    jobs_done = 0
    job = JOBS[0]
    state: dict[str, Any] | None = None
    rows: list[int] = []
    modes_seen: set[str] = set()
    for _ in range(CYCLES):
        mode = rng.choice(MODES)
        modes_seen.add(mode)
        got, state = await cycle(job, state, mode, rng.randint(0, 4))
        rows += got
        if state["epoch"] == EPOCHS:  # the job is over: check it, start the next
            want = expected(job)
            assert (rows if job["ordered"] else sorted(rows)) == (
                want if job["ordered"] else sorted(want)
            ), f"job {jobs_done} ({job}) lost or repeated rows"
            failed = sum(1 for k in range(KEYS) if k % 11 == 5) * EPOCHS
            assert state["skipped"] == failed
            assert state["delivered"]["rows"] == len(want)
            jobs_done += 1
            job, state, rows = JOBS[jobs_done % len(JOBS)], None, []
    assert jobs_done >= 3 and modes_seen == set(MODES)
