"""The pure rebatcher: exact batches, order, one copy at most, no asyncio."""

from __future__ import annotations

import ast
import pathlib
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncfeed.rebatch
from asyncfeed import Batch, Rebatcher
from tests.strategies import chunk_streams, make_chunk


def test_rebatch_module_imports_no_concurrency() -> None:
    tree = ast.parse(pathlib.Path(asyncfeed.rebatch.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "threading", "concurrent", "multiprocessing"}


def ids_of(batch: Batch) -> list[int]:
    return [int(v) for v in batch["ids"]]


def test_exact_batches_from_odd_chunks_keep_row_order() -> None:
    rb = Rebatcher(["ids"], 4)
    out: list[Batch] = []
    start = 0
    for n in [3, 1, 6, 2, 5]:
        out += rb.push([np.arange(start, start + n)])
        start += n
    assert [b.rows for b in out] == [4, 4, 4, 4]
    assert sum((ids_of(b) for b in out), []) == list(range(16))
    assert rb.pending_rows == 1
    last = rb.flush()
    assert last is not None and ids_of(last) == [16] and last.rows == 1
    assert rb.flush() is None
    assert [b.index for b in [*out, last]] == [0, 1, 2, 3, 4]


def test_exact_batch_chunk_passes_through_without_copy() -> None:
    rb = Rebatcher(["x"], 8)
    chunk = np.arange(8.0)
    (batch,) = rb.push([chunk])
    assert batch["x"] is chunk or np.shares_memory(batch["x"], chunk)


def test_large_chunk_yields_views_and_carries_the_rest() -> None:
    rb = Rebatcher(["x"], 8)
    chunk = np.arange(20)
    batches = rb.push([chunk])
    assert [b.rows for b in batches] == [8, 8]
    assert all(np.shares_memory(b["x"], chunk) for b in batches)
    assert rb.pending_rows == 4
    tail = rb.flush()
    assert tail is not None and not np.shares_memory(tail["x"], chunk)
    assert list(tail["x"]) == [16, 17, 18, 19]


def test_carried_rows_force_a_copy_into_a_fresh_buffer() -> None:
    rb = Rebatcher(["x"], 4)
    assert rb.push([np.arange(2)]) == []
    chunk = np.arange(2, 6)
    (batch,) = rb.push([chunk])
    assert not np.shares_memory(batch["x"], chunk)
    assert list(batch["x"]) == [0, 1, 2, 3]
    # the next batch gets its own buffer: the delivered one is never overwritten
    nxt, *_ = rb.push([np.arange(6, 12)])
    assert list(batch["x"]) == [0, 1, 2, 3]
    assert list(nxt["x"]) == [4, 5, 6, 7]


def test_non_contiguous_chunks_are_copied_into_contiguous_batches() -> None:
    rb = Rebatcher(["x"], 3)
    base = np.arange(24).reshape(6, 4)
    strided = base[:, ::2]  # not C-contiguous
    batches = rb.push([strided])
    assert [b.rows for b in batches] == [3, 3]
    for b in batches:
        assert b["x"].flags.c_contiguous
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), strided)


def test_read_only_chunks_are_accepted() -> None:
    rb = Rebatcher(["x"], 2)
    arr = np.arange(3)
    arr.flags.writeable = False
    out = rb.push([arr])
    assert [list(b["x"]) for b in out] == [[0, 1]]


def test_rebatch_off_passes_chunks_as_they_come() -> None:
    rb = Rebatcher(["x"], 4, rebatch=False)
    assert [b.rows for b in rb.push([np.arange(7)])] == [7]
    assert rb.push([np.arange(0)]) == []
    assert rb.flush() is None


def test_discard_returns_carried_rows() -> None:
    rb = Rebatcher(["x"], 10)
    rb.push([np.arange(7)])
    assert rb.discard() == 7
    assert rb.pending_rows == 0 and rb.flush() is None


def test_batch_is_a_read_only_mapping() -> None:
    rb = Rebatcher(["a", "b"], 2)
    (batch,) = rb.push([np.zeros(2), np.ones(2)])
    assert list(batch) == ["a", "b"] and len(batch) == 2
    with pytest.raises(TypeError):
        batch["a"] = np.zeros(2)  # type: ignore[index]
    assert "rows=2" in repr(batch)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        Rebatcher(["x"], 0)


@settings(max_examples=150, deadline=None)
@given(chunk_streams(), st.booleans())
def test_property_every_row_once_in_order_in_exact_batches(stream, fortran) -> None:  # type: ignore[no-untyped-def]
    batch_size, specs, sizes = stream
    names = [f"b{i}" for i in range(len(specs))]
    rb = Rebatcher(names, batch_size)
    out: list[Batch] = []
    start = 0
    chunks = []
    for n in sizes:
        chunk = make_chunk(start, n, specs, fortran=fortran)
        chunks.append(chunk)
        out += rb.push(chunk)
        start += n
    assert all(b.rows == batch_size for b in out)
    assert rb.pending_rows == start - batch_size * len(out) < batch_size
    tail = rb.flush()
    if tail is not None:
        out.append(tail)
    for i, name in enumerate(names):
        got = np.concatenate([b[name] for b in out]) if out else None
        nonempty = [c[i] for c in chunks if c[i].shape[0]]
        want = np.concatenate(nonempty) if nonempty else None
        if want is None:
            assert got is None or got.shape[0] == 0
            continue
        assert got is not None
        assert got.dtype == specs[i][0] and got.shape[1:] == specs[i][1]
        assert np.array_equal(got, want)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.lists(st.integers(0, 20), max_size=30))
def test_property_small_and_large_chunks_mixed(batch_size: int, sizes: list[int]) -> None:
    # rows of 4.8 KB: chunks of up to 6 rows are carried as views, larger ones copied at once
    rb = Rebatcher(["ids", "x"], batch_size)
    out: list[Batch] = []
    start = 0
    for n in sizes:
        ids = np.arange(start, start + n)
        out += rb.push([ids, np.repeat(ids.astype(np.float64)[:, None], 600, axis=1)])
        start += n
    tail = rb.flush()
    assert all(b.rows == batch_size for b in out)
    if tail is not None:
        out.append(tail)
    ids = np.concatenate([b["ids"] for b in out]) if out else np.arange(0)
    assert np.array_equal(ids, np.arange(start))
    for b in out:
        assert np.array_equal(b["x"], np.repeat(b["ids"].astype(np.float64)[:, None], 600, axis=1))


def test_large_carried_chunks_are_copied_not_held() -> None:
    import gc
    import weakref

    rb = Rebatcher(["x"], 64)
    chunk = np.zeros((10, 8192), np.uint8)  # 80 KiB: above the carried-as-view size
    ref = weakref.ref(chunk)
    assert rb.push([chunk]) == []
    del chunk
    gc.collect()
    assert ref() is None and rb.pending_rows == 10
    small = np.ones((3, 8192), np.uint8)  # 24 KiB: carried as a view
    ref = weakref.ref(small)
    rb.push([small])
    del small
    assert ref() is not None
    batch = rb.flush()
    assert batch is not None and batch.rows == 13


def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def test_buffers_of_dropped_batches_are_reused() -> None:
    rb = Rebatcher(["x"], 4)
    (first,) = rb.push([np.arange(3)]) + rb.push([np.arange(3, 5)])
    address = _address(first["x"])
    del first
    second = rb.push([np.arange(5, 8)])[0]  # 5 carried + 3 new: fills a buffer again
    assert _address(second["x"]) == address
    assert list(second["x"]) == [4, 5, 6, 7]


def test_held_batches_and_views_are_never_overwritten() -> None:
    rb = Rebatcher(["x"], 4)
    held: list[Batch] = []
    views = []
    start = 0
    for n in [3, 2, 5, 1, 7, 4, 6, 3, 2, 8] * 5:
        for batch in rb.push([np.arange(start, start + n)]):
            if batch.index % 3 == 0:
                held.append(batch)
            elif batch.index % 3 == 1:
                views.append((batch.index, batch["x"][1:3]))  # the batch itself is dropped
            del batch
        start += n
    assert held and views
    for batch in held:
        assert list(batch["x"]) == list(range(4 * batch.index, 4 * batch.index + 4))
    for index, view in views:
        assert list(view) == [4 * index + 1, 4 * index + 2]


def test_new_batch_buffers_come_from_the_allocator_and_are_reused() -> None:
    made: list[weakref.ref[np.ndarray]] = []  # weak: a held reference would stop recycling

    def allocate(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arr = np.full(shape, -1, dtype)
        made.append(weakref.ref(arr))
        return arr

    rb = Rebatcher(["ids"], 4, allocate=allocate)
    first = rb.push([np.arange(3)]) + rb.push([np.arange(3, 6)])
    buffer = made[0]()
    assert len(made) == 1 and buffer is not None and buffer.shape == (4,)
    assert np.shares_memory(first[0]["ids"], buffer) and ids_of(first[0]) == [0, 1, 2, 3]
    del first, buffer
    rb.discard()
    again = rb.push([np.arange(2)]) + rb.push([np.arange(2, 4)])
    assert len(made) == 1 and np.shares_memory(again[0]["ids"], made[0]())  # recycled


# -- provenance and batch size changes --------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("key"), st.integers(0, 40)),  # a key of n rows (skip: its first rows)
        st.tuples(st.just("resize"), st.integers(1, 12)),
        st.tuples(st.just("end"), st.booleans()),  # an epoch ends: flush, or drop (drop_last)
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), events, st.integers(0, 3))
def test_property_provenance_names_every_row_and_parts_only_at_batch_ends(
    batch_size: int, stream: list[tuple[str, int]], skip: int
) -> None:
    """Keys pushed as the rebatch stage pushes them (a chunk of more than a batch in pieces of
    a batch): each batch's provenance spans exactly its rows, in order; only its first and last
    entries can be parts of a key (what the tracker relies on); a size change applies from the
    index it returns; indices count on from ``first_index``."""
    rb = Rebatcher(["ids", "x"], batch_size, track=True, first_index=5)
    out: list[Batch] = []
    changes: list[tuple[int, int]] = []
    tails: set[int] = set()  # indices of batches an epoch end flushed
    position = 0
    for kind, n in stream:
        if kind == "resize":
            changes.append((rb.set_batch_size(n), n))
        elif kind == "end":
            if n:
                rows, provenance = rb.drop_partial()
                assert rows == sum(e[4] - e[3] for e in provenance or ())
            elif (tail := rb.flush()) is not None:
                out.append(tail)
                tails.add(tail.index)
        else:
            first = min(skip, n)  # a resumed key: its first rows were delivered before
            ids = np.arange(1000 * position + first, 1000 * position + n)
            x = np.repeat(ids.astype(np.float64)[:, None], 600, axis=1)  # large beyond 6 rows
            pos = 0
            while pos < len(ids):
                end = min(len(ids), pos + rb.batch_size)
                tag = (0, position, position, first + pos, first + end, n)
                out += rb.push([ids[pos:end], x[pos:end]], tag)
                pos = end
            position += 1
    assert [b.index for b in out] == list(range(5, 5 + len(out)))
    for b in out:
        provenance = b.provenance or ()
        spanned = [1000 * p + r for _, _, p, lo, hi, _ in provenance for r in range(lo, hi)]
        assert spanned == ids_of(b) and b.rows == len(spanned)
        for entry in provenance[1:-1]:
            assert entry[4] == entry[5]  # whole in the middle
        size = [s for i, s in [(5, batch_size), *changes] if i <= b.index][-1]
        assert b.rows == size or (b.index in tails and b.rows < size)
