"""The benchmark's batch checks and row accounting: every problem is counted, none raised."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.checks import BatchChecker, BlobSpec
from benchmarks.data import STREAM_SHIFT, encode_ids

SPEC = [BlobSpec("float32", (4,))]


def rows(ids: list[int] | np.ndarray, width: int = 4) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    arr = np.zeros((ids.shape[0], width), np.float32)
    encode_ids(arr, ids)
    return arr


def test_good_batches_are_counted_and_nothing_is_lost() -> None:
    checker = BatchChecker(SPEC, 3)
    assert checker.check([rows([0, 1, 2])]) == 3
    assert checker.check([rows([3, 4, 5])]) == 3
    acc = checker.account([6], held=0)
    assert (acc.delivered, acc.unique_delivered, acc.lost, acc.duplicates) == (6, 6, 0, 0)
    assert acc.bad_batches == 0 and acc.first_error is None


def test_rows_neither_delivered_nor_held_are_lost() -> None:
    checker = BatchChecker(SPEC, 2)
    checker.check([rows([0, 1])])
    checker.check([rows([4, 5])])
    acc = checker.account([8], held=2)  # rows 2, 3 vanished; 6, 7 still in the pipeline
    assert acc.lost == 2 and acc.held == 2 and acc.held_known


def test_unknown_held_rows_count_as_lost() -> None:
    checker = BatchChecker(SPEC, 2)
    checker.check([rows([0, 1])])
    acc = checker.account([3], held=None)
    assert acc.lost == 1 and not acc.held_known


def test_duplicates_across_and_within_batches() -> None:
    checker = BatchChecker(SPEC, 3)
    checker.check([rows([0, 1, 2])])
    checker.check([rows([2, 3, 3])])
    acc = checker.account([4], held=0)
    assert acc.duplicates == 2
    assert acc.unique_delivered == 4 and acc.delivered == 6 and acc.lost == 0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ([rows([0, 1]), rows([0, 1])], "2 blobs, expected 1"),
        ([rows([0, 1]).astype(np.float64)], "float64"),
        ([rows([0, 1], width=6)], r"float32\[2, 6\]"),
        ([rows([0, 1, 2])], "3 rows, expected exactly 2"),
    ],
)
def test_bad_batches_are_counted_with_their_first_problem(
    arrays: list[np.ndarray], message: str
) -> None:
    checker = BatchChecker(SPEC, 2)
    checker.check(arrays)
    acc = checker.account([10], held=0)
    assert acc.bad_batches == 1
    assert acc.first_error is not None and message.replace("\\", "") in acc.first_error.replace(
        "\\", ""
    )


def test_a_final_partial_batch_is_allowed_only_when_flushed() -> None:
    checker = BatchChecker(SPEC, 4)
    checker.check([rows([0, 1])], final=True)
    assert checker.partial_batches == 1 and checker.bad_batches == 0
    checker.check([rows([2, 3])])
    assert checker.bad_batches == 1


def test_corrupt_check_words_are_counted() -> None:
    checker = BatchChecker(SPEC, 2)
    batch = rows([0, 1])
    batch.view(np.int64)[1, 1] ^= 1
    checker.check([batch])
    assert checker.account([2], held=0).corrupt_rows == 1


def test_rows_of_several_streams_in_one_batch() -> None:
    checker = BatchChecker(SPEC, 4)
    one = 1 << STREAM_SHIFT
    checker.check([rows([0, one, 1, one + 1])])
    acc = checker.account([2, 3], held=1)
    assert acc.unique_delivered == 4 and acc.lost == 0 and acc.produced == 5


def test_ids_beyond_what_a_stream_produced_are_corrupt() -> None:
    checker = BatchChecker(SPEC, 2)
    checker.check([rows([0, 7])])
    acc = checker.account([1], held=0)
    assert acc.corrupt_rows == 1 and acc.unique_delivered == 1


def test_label_ids_and_tensor_like_blobs() -> None:
    class FakeTensor:
        def __init__(self, arr: np.ndarray) -> None:
            self._arr = arr

        def numpy(self) -> np.ndarray:
            return self._arr

    checker = BatchChecker(
        [BlobSpec("uint8", (2, 2)), BlobSpec("int64", ())], 2, id_blob=1, id_mode="label"
    )
    images = np.zeros((2, 2, 2), np.uint8)
    checker.check([FakeTensor(images), FakeTensor(np.array([5, 6]))])
    acc = checker.account([7], held=0)
    assert acc.unique_delivered == 2 and acc.lost == 5 and acc.bad_batches == 0


def test_many_rows_grow_the_seen_map() -> None:
    checker = BatchChecker(SPEC, 1000)
    for start in range(0, 200_000, 1000):
        checker.check([rows(np.arange(start, start + 1000))])
    assert checker.account([200_000], held=0).unique_delivered == 200_000
