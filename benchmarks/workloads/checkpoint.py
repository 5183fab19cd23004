"""checkpoint: what ``Feed.state_dict()`` costs with a full pipeline behind it.

A keyed feed (``Feed.from_keys``, async ``fetch_one`` returning a 1-row chunk, batch 256,
concurrency 256, ``max_buffered_chunks=800``, ``ordered=False``) delivers ``TAKEN`` batches to
its consumer, which then stops reading. The fetch calls that return are counted so that,
with every buffer full — the batch channel, the batch the rebatch stage holds, the chunk
queue's 800 chunks — the next 256 calls (one per worker) wait on an event that never comes.
Once all 256 wait, the pipeline is still; the run checks ``feed.stats()`` (800 chunks queued,
256 calls in flight) and fails if the depth is not the one claimed. Then, on the feed's loop,
it times ``feed.state_dict()`` over many calls, and ``json.dumps`` of the state separately.

Configurations: keys completed in order (the state is a watermark); out of order (1 call in
16 yields to the loop 1–64 times, seeded, before it returns, so later calls return first,
the consumer receives keys above missing ones and the state holds a sparse ``consumed``
set; no clock is involved, so every run makes the same state whatever the machine's speed);
and the same with ``shuffle=True, epochs=2`` over 8192 keys (a seeded permutation per epoch;
the consumer is 8 batches into epoch 1). A last configuration takes 400 batches in order
before it stops (its state is timed 200 times): the state should be no larger than after
40, being bounded by what is in flight and buffered, never by the history.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import LatencyColumns, Target, Workload
from .targets import median

__all__ = ["Checkpoint", "WORKLOAD", "measure_state_dict"]

CONCURRENCY = 256
BATCH = 256
CHUNKS = 800
TAKEN = 40  # batches the consumer receives before it stops reading
LONG_TAKEN = 400  # ... in the configuration with a longer history
CALLS = 2000  # state_dict() calls timed per measurement (--quick: a quarter)
SLOW_EVERY = 16  # out of order: one call in this many returns ...
SLOW_YIELDS = 64  # ... after yielding to the loop up to this many times
EPOCH_KEYS = 8192  # shuffled configuration: keys per epoch (32 batches)
FILL_TIMEOUT_S = 60.0
TARGET_US = 1000.0


class _Gate:
    """Numbers ``fetch_one`` calls as they start; once ``limit`` calls started, holds every
    later call until the feed stops. Out of order (``slow_every``): one call in that many
    yields to the loop a seeded 1–``SLOW_YIELDS`` times before it returns, while the other
    calls return at once; the completion order depends on no clock."""

    def __init__(self, workers: int, slow_every: int) -> None:
        self.limit = 0
        self.calls = 0
        self.held = 0
        self.workers = workers
        self.slow_every = slow_every
        self.all_held = asyncio.Event()
        self._never = asyncio.Event()
        self._rng = random.Random(0)
        self._row = np.zeros((1, 16), np.float32)  # read only: one row for every chunk

    async def fetch_one(self, key: Any) -> list[np.ndarray]:
        n = self.calls
        self.calls = n + 1
        if n >= self.limit:
            self.held += 1
            if self.held == self.workers:
                self.all_held.set()
            await self._never.wait()  # until the feed stops and cancels it
        elif self.slow_every and n % self.slow_every == 0:
            for _ in range(self._rng.randint(1, SLOW_YIELDS)):
                await asyncio.sleep(0)  # one turn of the loop: later calls return first
        return [self._row]


def _quantiles(ns: list[int]) -> tuple[float, float]:
    """Median and 99th percentile, in µs, of durations in ns."""
    cuts = statistics.quantiles(ns, n=100)
    return statistics.median(ns) / 1e3, cuts[98] / 1e3


async def measure_state_dict(
    *,
    calls: int,
    taken: int = TAKEN,
    slow_every: int = 0,
    shuffle: bool = False,
    epochs: int | None = None,
    concurrency: int = CONCURRENCY,
    chunks: int = CHUNKS,
) -> dict[str, Any]:
    """Fill a keyed feed as the module docstring says, then time ``state_dict()``.

    ``epochs`` None: endless keys; else ``EPOCH_KEYS`` keys, ``epochs`` passes.

    Raises:
        RuntimeError: the pipeline did not settle at the depth claimed.
    """
    import asyncfeed as af

    gate = _Gate(concurrency, slow_every)
    keys: Iterable[int] = itertools.count() if epochs is None else range(EPOCH_KEYS)
    feed = af.Feed.from_keys(
        keys,
        gate.fetch_one,
        blobs=["data"],
        batch_size=BATCH,
        concurrency=concurrency,
        max_buffered_chunks=chunks,
        ordered=False,
        shuffle=shuffle,
        epochs=1 if epochs is None else epochs,
        log_interval=None,
    )
    # Calls that return: the batches taken, then the batch channel, the batch the rebatch
    # stage holds while it waits for room, and the chunk queue, all full.
    gate.limit = (taken + feed.options.prefetch_batches + 1) * BATCH + chunks
    async with feed:
        received = 0
        async for _ in feed:
            received += 1
            if received == taken:
                break
        try:
            async with asyncio.timeout(FILL_TIMEOUT_S):
                await gate.all_held.wait()
        except TimeoutError:
            raise RuntimeError(
                f"the pipeline did not settle: {gate.held} of {concurrency} calls held, "
                f"queues {dict(feed.stats().queues)}"
            ) from None
        stats = feed.stats()
        queued, _ = stats.queues["chunks"]
        if queued != chunks or stats.inflight != concurrency:
            raise RuntimeError(
                f"expected {chunks} chunks queued and {concurrency} calls in flight, found "
                f"{queued} and {stats.inflight} (queues {dict(stats.queues)})"
            )
        state_dict = feed.state_dict
        timed = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            state = state_dict()
            timed.append(time.perf_counter_ns() - t0)
        dumped = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            text = json.dumps(state)
            dumped.append(time.perf_counter_ns() - t0)
    us, p99 = _quantiles(timed)
    json_us, json_p99 = _quantiles(dumped)
    records: Mapping[str, Any] = state["epochs"]
    return {
        "state_dict_us": us,
        "state_dict_p99_us": p99,
        "json_us": json_us,
        "json_p99_us": json_p99,
        "state_bytes": len(text),
        "consumed_keys": sum(len(r.get("consumed", ())) for r in records.values()),
        "watermark": max((int(r.get("watermark", 0)) for r in records.values()), default=0),
        "epoch": state["epoch"],
        "chunks_queued": queued,
        "fetches_in_flight": stats.inflight,
        "batches_queued": stats.queues["batches"][0],
        "batches_received": state["delivered"]["batches"],
        "calls": calls,
    }


class Checkpoint(Workload):
    name = "checkpoint"
    title = "checkpoint: state_dict() at concurrency 256 with 800 chunks buffered"
    description = (
        f"`Feed.from_keys(keys, async fetch_one)`, 1-row chunks, batch {BATCH}, concurrency "
        f"{CONCURRENCY}, max_buffered_chunks={CHUNKS}, ordered=False. The consumer takes "
        f"{TAKEN} batches and stops; the pipeline fills (checked in `stats()`: {CHUNKS} "
        f"chunks queued, {CONCURRENCY} fetch calls in flight, the batch channel full) and "
        f"`state_dict()` is timed {CALLS} times on the feed's loop, then `json.dumps` of the "
        f"state. *Out of order*: 1 call in {SLOW_EVERY} yields to the loop 1–{SLOW_YIELDS} "
        "times (seeded) before it returns, so later keys complete first and the state holds "
        "consumed keys above missing ones (a turn of the loop is about a batch here, so a "
        f"slow key is up to ~{SLOW_YIELDS} batches late). *{LONG_TAKEN} batches taken*: a "
        f"longer history (state timed {CALLS // 10} times); the state should not grow with "
        "it, being bounded by what is in flight and buffered. Median of the medians over the "
        "repetitions, each in a fresh process."
    )
    table_kind = "latency"
    latency_columns: LatencyColumns = (
        ("state_dict() µs median (min–max)", "state_dict_us", "range"),
        ("p99 µs", "state_dict_p99_us", "median"),
        ("json.dumps µs", "json_us", "median"),
        ("json p99 µs", "json_p99_us", "median"),
        ("state bytes", "state_bytes", "median"),
        ("consumed keys above the watermark", "consumed_keys", "median"),
    )

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        calls = CALLS // 4 if quick else CALLS

        def spec(label: str, primary: bool = False, **params: Any) -> RunSpec:
            params = {"calls": calls, **params}
            return RunSpec(self.name, "measure", label, params, phases, primary)

        return [
            spec("in order (endless keys)", primary=True),
            spec(
                f"in order, {LONG_TAKEN} batches taken (endless keys)",
                taken=LONG_TAKEN,
                calls=max(2, calls // 10),
            ),
            spec("out of order (endless keys)", slow_every=SLOW_EVERY),
            spec(
                f"out of order, shuffle=True, epochs=2 ({EPOCH_KEYS} keys)",
                slow_every=SLOW_EVERY,
                shuffle=True,
                epochs=2,
            ),
        ]

    def checker(self, spec: RunSpec) -> BatchChecker:
        raise Unavailable("the checkpoint workload measures with measure_state_dict()")

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        raise Unavailable("the checkpoint workload measures with measure_state_dict()")

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        p = spec.params
        result = asyncio.run(
            measure_state_dict(
                calls=int(p["calls"]),
                taken=int(p.get("taken", TAKEN)),
                slow_every=int(p.get("slow_every", 0)),
                shuffle=bool(p.get("shuffle", False)),
                epochs=p.get("epochs"),
            )
        )
        result["note"] = (
            f"{result['chunks_queued']} chunks queued, {result['fetches_in_flight']} calls "
            f"in flight, {result['batches_queued']} batches ready; consumer in epoch "
            f"{result['epoch']} at watermark {result['watermark']}"
        )
        return result

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        text = f"state_dict() median < 1 ms at concurrency {CONCURRENCY}, {CHUNKS} chunks buffered"
        rows = [r for r in summary.values() if median(r, "state_dict_us") is not None]
        if not rows:
            return [Target(text, None, "not measured")]
        worst = max(median(r, "state_dict_us") or 0.0 for r in rows)
        detail = "; ".join(f"{r['label']}: {median(r, 'state_dict_us'):.0f} µs" for r in rows)
        p99 = "; ".join(f"{r['label']}: {median(r, 'state_dict_p99_us'):.0f} µs" for r in rows)
        dumps = "; ".join(f"{r['label']}: {median(r, 'json_us'):.0f} µs" for r in rows)
        return [
            Target(text, worst < TARGET_US, detail),
            Target("state_dict() p99", None, p99, info=True),
            Target("json.dumps(state) median", None, dumps, info=True),
        ]


WORKLOAD = Checkpoint()
