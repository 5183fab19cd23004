"""Counter-based rows: unique, consecutive ids per stream, shared counters, draining."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.data import STREAM_SHIFT, RowSource, RowSpec, Streams, decode_ids


@pytest.mark.parametrize(
    "spec", [RowSpec((16,)), RowSpec((3, 8, 8), min_rows=1, max_rows=50), RowSpec((2,), "int64")]
)
def test_ids_are_consecutive_and_counted(spec: RowSpec) -> None:
    streams = Streams()
    src = RowSource(spec, streams, stream=3)
    ids = []
    for _ in range(300):
        chunk = src.chunk()
        assert chunk is not None and chunk.shape[1:] == spec.shape
        got, bad = decode_ids(chunk)
        assert bad == 0
        ids.append(got)
    all_ids = np.concatenate(ids)
    assert np.array_equal(all_ids, (3 << STREAM_SHIFT) + np.arange(all_ids.shape[0]))
    assert streams.produced()[3] == all_ids.shape[0]


def test_small_chunks_never_share_memory() -> None:
    src = RowSource(RowSpec((16,)), Streams())
    chunks = [src.chunk() for _ in range(10_000)]
    assert not any(np.shares_memory(a, b) for a, b in itertools.pairwise(chunks))
    ids = np.concatenate([decode_ids(c)[0] for c in chunks])  # type: ignore[arg-type]
    assert np.unique(ids).shape[0] == 10_000


def test_draining_stops_every_source() -> None:
    streams = Streams()
    src = RowSource(RowSpec((16,)), streams)
    assert src.chunk() is not None
    streams.drain()
    assert src.chunk() is None and src.rows() is None


def test_row_spec_rejects_rows_too_small_for_an_id() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        RowSpec((1,), "float32")
    with pytest.raises(ValueError, match="chunk size range"):
        RowSpec((16,), min_rows=5, max_rows=2)
