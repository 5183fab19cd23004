"""Fuzzed fetcher outputs: every bad one gets a ChunkError naming the offending value,
none hangs or corrupts a later batch, and odd but valid arrays (non-contiguous, read-only,
Fortran order, zero-stride, mappings) are accepted and copied correctly."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncfeed as af
from tests.reliability.faults import Tracker, assert_clean_end, timed

pytestmark = pytest.mark.timeout(60)

BLOBS = ["ids", "x"]
BLOB_LIST = r"\['ids', 'x'\]"

# A valid chunk's ids (int64) and x (float32[n, 4] == id), laid out in odd but valid ways.
LAYOUTS = ["plain", "strided", "strided-x", "read-only", "fortran", "zero-stride", "mapping"]


def good(start: int, n: int, layout: str) -> Any:
    ids = np.arange(start, start + n, dtype=np.int64)
    x = np.repeat(ids.astype(np.float32)[:, None], 4, axis=1)
    if layout == "strided":
        wide = np.zeros(2 * n, np.int64)
        wide[::2] = ids
        ids = wide[::2]
        wide_x = np.zeros((2 * n, 4), np.float32)
        wide_x[::2] = x
        x = wide_x[::2]
    elif layout == "strided-x":
        cols = np.zeros((n, 8), np.float32)
        cols[:, ::2] = x
        x = cols[:, ::2]
    elif layout == "read-only":
        ids.setflags(write=False)
        x.setflags(write=False)
    elif layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "zero-stride":
        x = np.broadcast_to(ids.astype(np.float32)[:, None], (n, 4))
    elif layout == "mapping":
        return {"x": x, "ids": ids}
    return [ids, x]


def ids3() -> np.ndarray:
    return np.arange(3, dtype=np.int64)


def x3() -> np.ndarray:
    return np.zeros((3, 4), np.float32)


# (bad output, anchored regex the ChunkError message must match; {o} is the origin)
BAD: list[tuple[Any, str]] = [
    (7, r"chunk from {o}: expected a list of 2 arrays \(one per blob {b}\), got int$"),
    ("ids", r"chunk from {o}: expected a list of 2 arrays \(one per blob {b}\), got str$"),
    (b"\x00", r"chunk from {o}: expected a list of 2 arrays \(one per blob {b}\), got bytes$"),
    (np.zeros((3, 2)), r"chunk from {o}: expected a list .*, got ndarray$"),
    ([ids3()], r"chunk from {o}: expected 2 arrays \(one per blob {b}\), got 1$"),
    ([ids3(), x3(), x3()], r"chunk from {o}: expected 2 arrays \(one per blob {b}\), got 3$"),
    ([[0, 1, 2], x3()], r"blob 'ids' from {o}: expected a numpy.ndarray, got list$"),
    ([[[0], [1, 2]], x3()], r"blob 'ids' from {o}: expected a numpy.ndarray, got list$"),
    ([ids3(), x3().tolist()], r"blob 'x' from {o}: expected a numpy.ndarray, got list$"),
    ([np.int64(3), x3()], r"blob 'ids' from {o}: expected a numpy.ndarray, got int64$"),
    ([np.array(3), x3()], r"blob 'ids' from {o}: got a 0-d array; a chunk needs a first"),
    ([ids3().astype(object), x3()], r"blob 'ids' from {o}: dtype object holds Python objects"),
    (
        [ids3(), np.zeros((2, 4), np.float32)],
        r"blob 'x' from {o}: first dimensions differ between blobs \('ids': \(3,\), "
        r"'x': \(2, 4\)\)$",
    ),
    (
        [ids3().astype(np.int32), x3()],
        r"blob 'ids' from {o}: got dtype int32 and shape \(3,\), but the blob's first chunk "
        r"fixed dtype int64 and shape \(N\)$",
    ),
    (
        [ids3(), np.zeros((3, 4), np.float64)],
        r"blob 'x' from {o}: got dtype float64 and shape \(3, 4\), but the blob's first chunk "
        r"fixed dtype float32 and shape \(N, 4\)$",
    ),
    (
        [ids3(), np.zeros((3, 5), np.float32)],
        r"blob 'x' from {o}: got dtype float32 and shape \(3, 5\), but .* shape \(N, 4\)$",
    ),
    (
        [ids3(), np.zeros((3, 4), ">f4")],
        r"blob 'x' from {o}: got dtype >f4 and shape \(3, 4\)",
    ),
    ({"ids": ids3(), "y": x3()}, r"chunk from {o}: mapping keys do not match the blobs {b} "),
]

outputs = st.lists(
    st.one_of(
        st.tuples(st.just("good"), st.integers(0, 40), st.sampled_from(LAYOUTS)),
        st.tuples(st.just("none"), st.just(0), st.just("")),
        st.tuples(st.just("bad"), st.integers(0, len(BAD) - 1), st.just("")),
    ),
    max_size=25,
)


def materialise(plan: list[tuple[str, int, str]]) -> tuple[list[Any], list[int], list[str]]:
    """(fetch results, ids of the valid rows in order, expected regex of each bad result)."""
    results: list[Any] = [good(0, 5, "plain")]  # the first chunk fixes the schema
    valid = list(range(5))
    regexes: list[str] = []
    start = 5
    for kind, n, layout in plan:
        if kind == "good":
            results.append(good(start, n, layout))
            valid += range(start, start + n)
            start += n
        elif kind == "none":
            results.append(None)
        else:
            results.append(BAD[n][0])
            regexes.append(BAD[n][1])
    return results, valid, regexes


def run_keyed(results: list[Any], batch_size: int, max_errors: int | None) -> Any:
    async def fetch_one(key: int) -> Any:
        return results[key]

    async def main() -> tuple[af.Feed, Tracker, BaseException | None]:
        feed = af.Feed.from_keys(
            range(len(results)),
            fetch_one,
            blobs=BLOBS,
            batch_size=batch_size,
            concurrency=1,
            ordered=True,
            max_errors=max_errors,
            log_interval=None,
        )
        tracker = Tracker(batch_size)
        try:
            async with feed:
                async for batch in feed:
                    tracker.add(batch)
        except af.AsyncFeedError as exc:
            return feed, tracker, exc
        return feed, tracker, None

    return asyncio.run(main())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=outputs, batch_size=st.integers(1, 16))
def test_fuzzed_outputs_stop_on_the_first_bad_one_with_its_exact_message(
    plan: list[tuple[str, int, str]], batch_size: int
) -> None:
    results, valid, regexes = materialise(plan)
    feed, tracker, error = run_keyed(results, batch_size, max_errors=None)
    if not regexes:
        assert error is None
        assert sorted(tracker.seen) == valid  # every valid row, each once
        assert_clean_end(feed, tracker, causes=set(), issued=len(valid))
        return
    assert isinstance(error, af.ChunkError)
    bad_key = next(i for i, r in enumerate(results) if r is not None and _is_bad(r))
    assert re.match(regexes[0].format(o=f"key {bad_key}", b=BLOB_LIST), str(error)), str(error)
    assert tracker.seen <= set(valid)  # what was delivered before the stop is intact
    assert_clean_end(feed, tracker, causes={"error"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=outputs, batch_size=st.integers(1, 16))
def test_fuzzed_outputs_within_a_budget_deliver_every_valid_row_intact(
    plan: list[tuple[str, int, str]], batch_size: int
) -> None:
    results, valid, regexes = materialise(plan)
    feed, tracker, error = run_keyed(results, batch_size, max_errors=len(regexes))
    assert error is None
    assert [int(i) for i in sorted(tracker.seen)] == valid
    stats = assert_clean_end(feed, tracker, causes=set(), issued=len(valid))
    assert stats.fetch_errors == len(regexes)


def _is_bad(result: Any) -> bool:
    return any(result is bad for bad, _ in BAD)


@pytest.mark.parametrize("batch_size", [3, 7, 10])
@pytest.mark.parametrize("layout", LAYOUTS)
async def test_valid_odd_layouts_are_accepted_and_copied_correctly(
    layout: str, batch_size: int
) -> None:
    sources = iter([good(i * 7, 7, layout) for i in range(30)])

    async def fetch(worker_id: int, batch_size: int) -> Any:
        return next(sources, None)

    feed = af.Feed(fetch, blobs=BLOBS, batch_size=batch_size, concurrency=1)
    tracker = Tracker(batch_size)
    async with feed:
        while tracker.rows < 140:
            tracker.add(await anext(feed))  # checks x == ids row by row
    assert sorted(tracker.seen) == list(range(tracker.rows))
    assert_clean_end(feed, tracker, issued=210)


@pytest.mark.timeout(20)
async def test_a_chunk_with_a_huge_first_dimension_neither_hangs_nor_piles_up() -> None:
    rows = 10**12  # zero-stride: no memory behind it, but 10**9 batches' worth of rows
    huge: list[np.ndarray] = [
        np.broadcast_to(np.arange(1, dtype=np.int64), (rows,)),
        np.broadcast_to(np.zeros((1, 4), np.float32), (rows, 4)),
    ]
    served = asyncio.Event()

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
        if served.is_set():
            return None
        served.set()
        return huge

    feed = af.Feed(fetch, blobs=BLOBS, batch_size=1000, concurrency=1, prefetch_batches=2)
    async with feed:
        for _ in range(5):
            batch = await anext(feed)
            assert batch.rows == 1000 and not batch["ids"].any()
        stats = feed.stats()
        assert stats.rows_batched <= 2 * 1000  # the prefetch bound holds: no pile of batches
        with timed():
            await feed.aclose()
    stats = assert_clean_end(feed)
    assert stats.rows_fetched == rows and stats.dropped_by_cause == {"stop": rows - 5000}
