"""Per-batch cost of the thread bridge: the feed's loop → bridge thread → ``Sink.put``.

Run with ``python -m benchmarks.handoff``. A closed channel pre-filled with ``batches``
batches feeds :class:`asyncfeed.handoff.SinkBridge` (the stage a feed with ``sink=`` runs);
a consumer thread drains the sink. The time from the first handoff until the consumer has
read the last batch, divided by ``batches``, is the per-batch cost; the median over
``repeats`` runs is reported. ``direct_blobs_queue`` is the floor: the same batches
written by one thread into a ``BlobsQueue`` and read by another, with no event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncfeed.batch import Batch
from asyncfeed.handoff import SinkBridge
from asyncfeed.queues import Channel
from asyncfeed.sinks import BlobsQueue, Sink
from asyncfeed.stats import DropCause, Ledger, Stage

SINKS = ("blobs_queue", "torch_cpu")  # and "torch_cuda", where CUDA is available


def _batch(batch_size: int) -> Batch:
    arrays: dict[str, np.ndarray] = {
        "data": np.zeros((batch_size, 3, 32, 32), np.float32),
        "label": np.zeros(batch_size, np.int64),
    }
    return Batch(arrays, 0, batch_size)


def _sink(kind: str) -> tuple[Sink, Callable[[], Any]]:
    """A sink of ``kind`` (capacity 4) and the blocking read its consumer calls."""
    if kind == "blobs_queue":
        q = BlobsQueue(capacity=4, num_blobs=2)
        return q, q.dequeue
    if kind in ("torch_cpu", "torch_cuda"):
        from asyncfeed.sinks import TorchSink

        t = TorchSink(kind.removeprefix("torch_"), capacity=4)
        return t, t.get
    raise ValueError(f"unknown sink {kind!r}; choose from {SINKS}")


def _drain(read: Callable[[], Any], counted: list[int]) -> None:
    n = 0
    while read() is not None:
        n += 1
    counted.append(n)


async def _through_bridge(kind: str, batch: Batch, batches: int) -> float:
    sink, read = _sink(kind)
    rows = batch.rows * batches
    ledger = Ledger()
    ledger.fetch(rows)
    ledger.move(rows, Stage.QUEUED, Stage.BATCHED)
    channel: Channel[Batch] = Channel(batches)
    for _ in range(batches):
        channel.put_nowait(batch)
    channel.close()
    bridge = SinkBridge(sink, name="asyncfeed-bench-sink", on_delivered=lambda rows: None)
    counted: list[int] = []
    consumer = threading.Thread(target=_drain, args=(read, counted), name="bench-consumer")
    consumer.start()
    start = time.perf_counter()
    await bridge.run(channel, ledger, on_closed=lambda: None)  # closes the sink at the end
    consumer.join()
    elapsed = time.perf_counter() - start
    bridge.shutdown(DropCause.STOP)
    bridge.join(5.0)
    if counted != [batches] or ledger.delivered != rows:
        raise RuntimeError(f"lost batches: read {counted}, delivered {ledger.delivered} rows")
    return elapsed / batches * 1e6


def _direct(batch: Batch, batches: int) -> float:
    q = BlobsQueue(capacity=4, num_blobs=2)
    counted: list[int] = []
    consumer = threading.Thread(target=_drain, args=(q.dequeue, counted), name="bench-consumer")
    consumer.start()
    start = time.perf_counter()
    for _ in range(batches):
        q.put(batch)
    q.close()
    consumer.join()
    return (time.perf_counter() - start) / batches * 1e6


def measure_handoff(
    *,
    batches: int = 2000,
    repeats: int = 7,
    batch_size: int = 32,
    sinks: Sequence[str] = SINKS,
) -> dict[str, float]:
    """Median µs per batch through the bridge into each sink, over ``repeats`` runs.

    Returns ``{"<sink>_us_per_batch": median, ...}`` for each of ``sinks`` (``torch_cpu``
    is left out when torch does not import) plus ``direct_blobs_queue_us_per_batch``.
    """
    batch = _batch(batch_size)
    kinds = list(sinks)
    if "torch_cpu" in kinds:
        try:
            import torch  # noqa: F401
        except ImportError:
            kinds.remove("torch_cpu")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    samples["direct_blobs_queue"] = []
    for _ in range(repeats):
        for kind in kinds:
            samples[kind].append(asyncio.run(_through_bridge(kind, batch, batches)))
        samples["direct_blobs_queue"].append(_direct(batch, batches))
    return {f"{k}_us_per_batch": statistics.median(v) for k, v in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handoff")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    results = measure_handoff(
        batches=args.batches, repeats=args.repeats, batch_size=args.batch_size
    )
    print(f"handoff: {args.batches} batches x {args.repeats} runs, median")
    for name, us in results.items():
        print(f"  {name.removesuffix('_us_per_batch'):<20} {us:8.1f} µs/batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
