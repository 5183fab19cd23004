"""The worker's ring allocator and the chunk layout (``procs/ring.py``), property-tested.

Random sequences of allocations and frees, in any order: slots never overlap, stay inside
the ring and aligned, the lowest free offset is used first, freed space is merged back (so a
full ring that empties can hold one slot of its whole size again), and the free-byte count
is exact throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncfeed.procs.ring import ALIGN, RingAllocator, arrays_from_block, block_layout
from tests.strategies import DTYPES

SIZE = 64 * ALIGN


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _gaps(live: dict[int, int]) -> list[tuple[int, int]]:
    """The free (start, size) gaps between live slots, lowest first."""
    gaps, pos = [], 0
    for start in sorted(live):
        if start > pos:
            gaps.append((pos, start - pos))
        pos = start + _aligned(live[start])
    if pos < SIZE:
        gaps.append((pos, SIZE - pos))
    return gaps


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("alloc"), st.integers(1, SIZE)),
            st.tuples(st.just("free"), st.integers(0, 1000)),
        ),
        max_size=80,
    )
)
def test_random_allocations_and_frees_never_overlap(ops: list[tuple[str, int]]) -> None:
    ring = RingAllocator(SIZE)
    live: dict[int, int] = {}  # start -> requested bytes
    for op, value in ops:
        if op == "alloc":
            fits = [g for g, size in _gaps(live) if size >= _aligned(value)]
            start = ring.allocate(value)
            if start is None:
                assert not fits  # refused only when no free gap is large enough
                continue
            assert start == fits[0]  # first fit: the lowest gap that is large enough
            assert start % ALIGN == 0 and start + _aligned(value) <= SIZE
            for other, n in live.items():  # no overlap with any live slot
                assert start + _aligned(value) <= other or other + _aligned(n) <= start
            live[start] = value
        elif live:
            start = sorted(live)[value % len(live)]  # free any live slot, in any order
            ring.free(start, live.pop(start))
        assert ring.free_bytes == SIZE - sum(_aligned(n) for n in live.values())
    for start, n in list(live.items()):
        ring.free(start, n)
    assert ring.free_bytes == SIZE
    assert ring.allocate(SIZE) == 0  # every free piece merged back into one


def test_the_lowest_free_offset_is_used_first_and_reused_after_a_free() -> None:
    ring = RingAllocator(4 * ALIGN)
    a, b, c = (ring.allocate(ALIGN) for _ in range(3))
    assert (a, b, c) == (0, ALIGN, 2 * ALIGN)
    ring.free(0, ALIGN)
    assert ring.allocate(ALIGN) == 0  # the hole at the start, before the end of the ring
    assert ring.allocate(2 * ALIGN) is None  # one slot left, too small
    assert ring.allocate(ALIGN) == 3 * ALIGN
    assert ring.allocate(1) is None and ring.free_bytes == 0


def test_an_empty_ring_takes_nothing() -> None:
    ring = RingAllocator(0)
    assert ring.allocate(1) is None and ring.free_bytes == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DTYPES).map(np.dtype),
            st.lists(st.integers(0, 5), max_size=3).map(tuple),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_block_layout_round_trips_any_arrays(
    specs: list[tuple[np.dtype, tuple[int, ...]]],
) -> None:
    rng = np.random.default_rng(0)
    arrays = [(rng.random((3, *shape)) * 100).astype(dt) for dt, shape in specs]
    layout, size = block_layout(arrays)
    assert size % ALIGN == 0
    offsets = [offset for _, _, offset in layout]
    assert all(o % ALIGN == 0 for o in offsets) and offsets == sorted(offsets)
    block = np.zeros(size, np.uint8)
    for arr, (_, _, offset) in zip(arrays, layout, strict=True):
        block[offset : offset + arr.nbytes] = arr.reshape(-1).view(np.uint8)
    back = arrays_from_block(block, layout)
    for got, want in zip(back, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
        assert np.shares_memory(got, block) or got.nbytes == 0  # views, not copies


@pytest.mark.parametrize("dtype", [">i4", "<f8"])
def test_non_native_byte_orders_keep_their_order(dtype: str) -> None:
    arr = np.arange(6, dtype=dtype).reshape(2, 3)
    layout, size = block_layout([arr])
    block = np.zeros(size, np.uint8)
    block[: arr.nbytes] = arr.reshape(-1).view(np.uint8)
    (back,) = arrays_from_block(block, layout)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)
