"""Chunk checks: every malformed chunk gives a ChunkError naming the blob and the origin."""

from __future__ import annotations

import numpy as np
import pytest

from asyncfeed import ChunkError
from asyncfeed.chunks import ChunkSchema


def specs_of(s: ChunkSchema) -> object:
    """The schema's specs now (a call, so a type checker keeps no earlier narrowing)."""
    return s.specs


def schema() -> ChunkSchema:
    return ChunkSchema(["data", "label"])


def test_valid_list_tuple_and_mapping_chunks() -> None:
    s = schema()
    d, lab = np.zeros((3, 2), np.float32), np.zeros(3, np.int64)
    assert s.check([d, lab])[0] is d
    assert s.check((d, lab))[1] is lab
    assert s.check({"label": lab, "data": d}) == (d, lab)


@pytest.mark.parametrize(
    ("chunk", "pattern"),
    [
        (np.zeros((3, 2)), r"^chunk from worker 7: expected a list of 2 arrays .* got ndarray$"),
        ([np.zeros(3)], r"^chunk from worker 7: expected 2 arrays .*, got 1$"),
        ([np.zeros(3), np.zeros(3), np.zeros(3)], r"expected 2 arrays .*, got 3$"),
        (
            [np.zeros(3), [1, 2, 3]],
            r"^blob 'label' from worker 7: expected a numpy.ndarray, got list$",
        ),
        ([np.array(1.0, np.float32), np.zeros(1)], r"^blob 'data' from worker 7: got a 0-d array"),
        (
            [np.zeros(3), np.array([1, "a", None], dtype=object)],
            r"^blob 'label' .*holds Python objects",
        ),
        (
            [np.zeros((3, 2)), np.zeros(4)],
            r"^blob 'label' from worker 7: first dimensions differ between blobs "
            r"\('data': \(3, 2\), 'label': \(4,\)\)$",
        ),
        ({"data": np.zeros(1)}, r"mapping keys do not match .*missing \['label'\]"),
        ({"data": np.zeros(1), "label": np.zeros(1), "x": np.zeros(1)}, r"unexpected \['x'\]"),
        ("not a chunk", r"got str$"),
    ],
)
def test_malformed_chunks(chunk: object, pattern: str) -> None:
    with pytest.raises(ChunkError, match=pattern):
        schema().check(chunk, worker_id=7)


def test_first_chunk_fixes_dtype_and_trailing_shape() -> None:
    s = schema()
    s.check([np.zeros((2, 3), np.float32), np.zeros(2, np.int64)], worker_id=1)
    with pytest.raises(
        ChunkError,
        match=r"^blob 'data' from worker 2: got dtype float64 and shape \(2, 3\), but the "
        r"blob's first chunk fixed dtype float32 and shape \(N, 3\)$",
    ):
        s.check([np.zeros((2, 3), np.float64), np.zeros(2, np.int64)], worker_id=2)
    with pytest.raises(
        ChunkError, match=r"^blob 'label' from key 'k': got dtype int64 and shape \(2, 1\)"
    ):
        s.check([np.zeros((2, 3), np.float32), np.zeros((2, 1), np.int64)], key="k")


def test_empty_chunk_does_not_fix_the_schema() -> None:
    s = schema()
    arrays = s.check([np.zeros((0,)), np.zeros(0)])
    assert arrays[0].shape[0] == 0 and specs_of(s) is None
    s.check([np.zeros((1, 5), np.uint8), np.zeros(1, np.int32)])
    specs = specs_of(s)
    assert isinstance(specs, tuple) and specs[0] == (np.dtype(np.uint8), (5,))


def test_a_bad_chunk_does_not_change_the_schema() -> None:
    s = schema()
    s.check([np.zeros((1, 2), np.float32), np.zeros(1)])
    with pytest.raises(ChunkError):
        s.check([np.zeros((1, 9), np.float32), np.zeros(1)])
    s.check([np.zeros((5, 2), np.float32), np.zeros(5)])  # still the first chunk's schema
