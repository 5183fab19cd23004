"""Hypothesis strategies for chunks and batch sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16, np.int8]


@st.composite
def chunk_streams(draw: st.DrawFn) -> tuple[int, list[tuple[np.dtype, tuple[int, ...]]], list[int]]:
    """(batch_size, per-blob (dtype, trailing shape), list of chunk row counts)."""
    batch_size = draw(st.integers(1, 64))
    blobs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(DTYPES).map(np.dtype),
                st.lists(st.integers(1, 4), max_size=2).map(tuple),
            ),
            min_size=1,
            max_size=4,
        )
    )
    sizes = draw(st.lists(st.integers(0, 150), max_size=30))
    return batch_size, blobs, sizes


def make_chunk(
    start: int, rows: int, specs: list[tuple[np.dtype, tuple[int, ...]]], *, fortran: bool = False
) -> list[np.ndarray]:
    """A chunk whose every blob encodes the global row index, so rows can be traced."""
    ids = np.arange(start, start + rows)
    out = []
    for dtype, trailing in specs:
        arr = np.empty((rows, *trailing), dtype=dtype)
        vals = ids.reshape((rows,) + (1,) * len(trailing))
        if dtype == np.bool_:
            arr[...] = (vals % 2).astype(bool)
        else:
            arr[...] = (vals % 100).astype(dtype)
        out.append(np.asfortranarray(arr) if fortran else arr)
    return out
