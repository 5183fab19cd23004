"""TorchSink's CUDA path on a real GPU: values, stream order, allocator reuse, memory, stop.

Skipped where CUDA is not available (CI has no GPU); ``benchmarks/cuda_run.sh`` runs these on
a GPU machine. Rows are counter-based (``ids`` int64, ``x`` float32 rows equal to their id),
so every check compares a batch with the ids it must hold. Checks run on the GPU and add
their mismatches into a device counter, so the consumer never waits for the GPU per batch:
its stream may lag far behind the sink's, which is the situation the stream and allocator
rules exist for.
"""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from tests.conftest import CounterSource

torch = pytest.importorskip("torch")
Tensor = Any  # torch.Tensor, imported at run time only
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

COLS = 64
# GPU cycles for torch.cuda._sleep: ~50 ms on a ~2 GHz GPU, far longer than a small copy.
LONG_SLEEP_CYCLES = 100_000_000


def counter_batch(start: int, rows: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + rows, dtype=np.int64)
    return {"ids": ids, "x": np.repeat(ids.astype(np.float32)[:, None], COLS, axis=1)}


def mismatches(out: dict[str, Tensor], start: int) -> Tensor:
    """Device count of values in ``out`` that differ from the counter rows from ``start``."""
    ids = out["ids"]
    want = torch.arange(start, start + ids.shape[0], device=ids.device, dtype=torch.int64)
    bad_ids = (ids != want).sum()
    bad_x = (out["x"] != want.to(torch.float32)[:, None]).sum()
    return bad_ids + bad_x


def produce(sink: af.TorchSink, batches: Iterator[dict[str, np.ndarray]]) -> threading.Thread:
    """Put every batch from a producer thread (as a feed's bridge thread does), then close."""

    def run() -> None:
        try:
            for b in batches:
                if not sink.put(b):
                    return
        finally:
            sink.close()

    thread = threading.Thread(target=run, name="producer")
    thread.start()
    return thread


def counter_batches(n: int, rows: int) -> Iterator[dict[str, np.ndarray]]:
    for i in range(n):
        yield counter_batch(i * rows, rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
@pytest.mark.parametrize(
    "dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
def test_tensors_arrive_on_the_named_device_with_their_values(device: str, dtype: str) -> None:
    sink = af.TorchSink(device, capacity=2)
    arr = (np.arange(4096 * 3) % 7).astype(dtype).reshape(4096, 3)
    assert sink.put({"a": arr, "ids": np.arange(4096, dtype=np.int64)})
    out = sink.get(timeout=10)
    assert out is not None
    assert out["a"].device == torch.device("cuda", 0) and out["a"].dtype == getattr(torch, dtype)
    assert np.array_equal(out["a"].cpu().numpy(), arr)
    assert out["ids"].cpu().tolist() == list(range(4096))
    assert sink.stats().staged == 1 and sink.stats().bytes_in == arr.nbytes + 4096 * 8


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pin_memory", [True, False])
def test_a_kernel_launched_right_after_get_sees_the_data(pin_memory: bool) -> None:
    """The copy stream is held back by a long GPU sleep; a consumer kernel queued at once
    after get() must still read the copied rows, because get() made its stream wait."""
    sink = af.TorchSink("cuda", capacity=2, pin_memory=pin_memory)
    consumer = torch.cuda.Stream()
    for i in range(4):
        with torch.cuda.stream(sink._stream):
            torch.cuda._sleep(LONG_SLEEP_CYCLES)  # the copy queued next starts after this
        assert sink.put(counter_batch(i * 100_000, 100_000))
        with torch.cuda.stream(consumer):
            out = sink.get(timeout=10)
            assert out is not None
            bad = mismatches(out, i * 100_000)
        consumer.synchronize()
        assert int(bad) == 0


@pytest.mark.timeout(60)
def test_without_the_stream_wait_the_same_kernel_reads_stale_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail: with ``wait_event`` made a no-op it does."""
    monkeypatch.setattr(torch.cuda.Stream, "wait_event", lambda self, event: None)
    sink = af.TorchSink("cuda", capacity=2)
    consumer = torch.cuda.Stream()
    bad_total = 0
    for i in range(4):
        with torch.cuda.stream(sink._stream):
            torch.cuda._sleep(LONG_SLEEP_CYCLES)
        assert sink.put(counter_batch(1 + i * 100_000, 100_000))
        with torch.cuda.stream(consumer):
            out = sink.get(timeout=10)
            assert out is not None
            bad = mismatches(out, 1 + i * 100_000)
        consumer.synchronize()
        bad_total += int(bad)
    assert bad_total > 0


def churn_consumer(
    sink: af.TorchSink, rows: int, seed: int, stop_after: int | None = None
) -> tuple[int, Tensor]:
    """Read batches on a lagging stream, holding, freeing and allocating tensors, until the
    sink ends or ``stop_after`` batches were read. Batch k must hold ids from ``k * rows``.

    Returns (batches read, device count of mismatches).
    """
    rng = random.Random(seed)
    consumer = torch.cuda.Stream()
    bad = torch.zeros((), dtype=torch.int64, device="cuda")
    held: collections.deque[tuple[int, dict[str, Tensor]]] = collections.deque()
    read = 0
    with torch.cuda.stream(consumer):
        while read != stop_after and (out := sink.get(timeout=30)) is not None:
            start = read * rows
            read += 1
            if rng.random() < 0.3:  # 0.5-2 ms, more than a batch costs the CPU: the lag grows
                torch.cuda._sleep(rng.randrange(1_000_000, 4_000_000))
            bad += mismatches(out, start)
            held.append((start, out))
            while len(held) > rng.randrange(0, 6):  # free some, in order, checking again
                old_start, old = held.popleft()
                bad += mismatches(old, old_start)
            junk = torch.empty(rng.randrange(1, 4 * rows * COLS), device="cuda")
            junk.fill_(-1.0)  # reuses freed blocks on this stream
            del out, junk
        for old_start, old in held:
            bad += mismatches(old, old_start)
    consumer.synchronize()
    return read, bad


@pytest.mark.timeout(180)
@pytest.mark.parametrize("pin_memory", [True, False])
def test_no_corruption_under_allocator_reuse_for_10000_batches(pin_memory: bool) -> None:
    rows, n = 256, 10_000
    sink = af.TorchSink("cuda", capacity=2, pin_memory=pin_memory)
    producer = produce(sink, counter_batches(n, rows))
    read, bad = churn_consumer(sink, rows, seed=7)
    producer.join(30)
    assert read == n
    assert int(bad) == 0
    if pin_memory:
        assert sink.stats().staged == n


@pytest.mark.timeout(180)
def test_no_corruption_in_a_feed_refilling_its_pinned_batches_at_full_speed(
    counter: CounterSource,
) -> None:
    """A feed builds its batches in the sink's pinned buffers and refills each one once
    nothing references it; the sink copies them straight to the device."""
    rows, n = 256, 10_000

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(100)  # 2.56 chunks a batch: every batch is a rebatcher copy

    sink = af.TorchSink("cuda", capacity=2)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=rows, concurrency=1, sink=sink)
    feed.start()
    try:
        read, bad = churn_consumer(sink, rows, seed=11, stop_after=n)
    finally:
        feed.stop(timeout=10)
    assert read == n
    assert int(bad) == 0
    assert sink.stats().direct >= n and sink.stats().staged == 0


@pytest.mark.timeout(120)
def test_without_record_stream_the_reuse_check_finds_corruption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reuse check can fail: with ``record_stream`` made a no-op, freed batches are
    reused by the sink's next copies while the lagging consumer still reads them."""
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    rows, n = 256, 300
    sink = af.TorchSink("cuda", capacity=2)
    consumer = torch.cuda.Stream()
    bad = torch.zeros((), dtype=torch.int64, device="cuda")
    producer = produce(sink, counter_batches(n, rows))
    i = 0
    with torch.cuda.stream(consumer):
        while (out := sink.get(timeout=30)) is not None:
            # ~10 ms a batch, far over the host's cost of one: the consumer's stream falls
            # further behind with every batch
            torch.cuda._sleep(20_000_000)
            bad += mismatches(out, i * rows)
            del out
            i += 1
    consumer.synchronize()
    producer.join(30)
    assert i == n
    assert int(bad) > 0


def peak_of(fn: Callable[[], object]) -> int:
    """Peak device bytes allocated by ``fn()`` beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("capacity", [1, 2, 4])
def test_device_memory_stays_within_capacity_batches(capacity: int) -> None:
    rows = 2 * 1024 * 1024 // (COLS * 4)  # x: 2 MiB a batch, ids 64 KiB
    batch_bytes = rows * COLS * 4 + rows * 8
    sample = {k: torch.from_numpy(a).cuda() for k, a in counter_batch(0, rows).items()}
    check_bytes = peak_of(partial(mismatches, sample, 0))  # the check's own temporaries
    sample.clear()
    sink = af.TorchSink("cuda", capacity=capacity)
    bad = torch.zeros((), dtype=torch.int64, device="cuda")

    def consume() -> None:
        nonlocal bad
        producer = produce(sink, counter_batches(300, rows))
        i = 0
        while True:  # holds one batch at a time, as a training step does
            out = sink.get(timeout=30)
            if out is None:
                break
            bad += mismatches(out, i * rows)
            del out
            i += 1
        producer.join(30)
        assert i == 300

    peak = peak_of(consume)
    assert int(bad) == 0
    # The sink's `capacity` batches, the one the consumer holds, the check's temporaries.
    assert batch_bytes <= peak <= (capacity + 1) * batch_bytes + check_bytes, (
        peak,
        batch_bytes,
        check_bytes,
    )


@pytest.mark.timeout(60)
def test_stop_while_the_consumer_holds_tensors(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        ids, x = counter.chunk(37)
        return [ids, np.repeat(x[:, :1], COLS, axis=1)]

    sink = af.TorchSink("cuda", capacity=2)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=128, concurrency=1, sink=sink)
    feed.start()
    held: list[dict[str, Tensor]] = []
    try:
        for _ in range(20):
            out = sink.get(timeout=30)
            assert out is not None
            held.append(out)
    finally:
        feed.stop(timeout=10)
    assert sink.closed
    torch.cuda.synchronize()
    ids = torch.cat([h["ids"] for h in held])
    assert ids.tolist() == list(range(20 * 128))  # one feed, in order
    bad = sum(int(mismatches(h, int(h["ids"][0]))) for h in held)
    assert bad == 0
    stats = feed.stats()
    assert stats.rows_fetched == stats.rows_delivered + stats.rows_dropped + stats.rows_in_flight
    # batches taken after the stop are whole and correct too, then the sink reports the end
    while (late := sink.get(timeout=10)) is not None:
        assert int(mismatches(late, int(late["ids"][0]))) == 0
    # the feed built its batches in the sink's pinned memory: no staging copy
    assert sink.stats().direct >= 20 and sink.stats().staged == 0


@pytest.mark.timeout(60)
async def test_get_and_aget_wait_on_the_callers_current_stream() -> None:
    sink = af.TorchSink("cuda", capacity=2)
    assert sink.put(counter_batch(0, 1000))
    assert sink.put(counter_batch(1000, 1000))
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        first = await sink.aget()
        assert first is not None
        bad = mismatches(first, 0)
    second = sink.get(timeout=5)
    assert second is not None
    torch.cuda.synchronize()
    assert int(bad) == 0 and int(mismatches(second, 1000)) == 0
