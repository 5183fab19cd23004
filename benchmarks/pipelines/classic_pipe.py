"""The classic thread design (:mod:`benchmarks.classic`), consumed from its blobs queues."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..classic import ClassicInput
from ..data import Streams
from ..runner import Runner

__all__ = ["ClassicRunner"]


class ClassicRunner(Runner):
    """Fetcher threads → ``queue.Queue`` of chunks → ``np.append`` enqueuer → blobs queues."""

    note = "reference re-implementation of Caffe2 data_workers (drops leftovers when full)"

    def __init__(
        self,
        streams: Streams,
        make_input: Callable[[], ClassicInput],
        fetching: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(streams)
        self._make_input = make_input
        self._fetching = fetching  # fetch calls in progress, when the workload counts them
        self._input: ClassicInput | None = None

    def start(self) -> None:
        self._input = self._make_input()
        self._input.start()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        assert self._input is not None
        return self._input.get_batch(timeout)

    def held_rows(self, ended: bool) -> int | None:
        """Rows in fetch calls still running (one each), then what the input holds.

        Read upstream first: a row moving on meanwhile is counted twice, never missed.
        """
        assert self._input is not None
        busy = self._fetching() if self._fetching is not None else 0
        return busy + self._input.held_rows()

    def quiescent(self) -> bool:
        busy = self._fetching() if self._fetching is not None else 0
        return busy == 0 and (self._input is None or self._input.rows_in_hand == 0)

    def stop(self) -> None:
        if self._input is not None and not self._input.stop():
            raise RuntimeError("classic design: threads still alive after stop()")
