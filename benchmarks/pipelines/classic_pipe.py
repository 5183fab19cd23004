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

    def __init__(self, streams: Streams, make_input: Callable[[], ClassicInput]) -> None:
        super().__init__(streams)
        self._make_input = make_input
        self._input: ClassicInput | None = None

    def start(self) -> None:
        self._input = self._make_input()
        self._input.start()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        assert self._input is not None
        return self._input.get_batch(timeout)

    def held_rows(self, ended: bool) -> int | None:
        assert self._input is not None
        return self._input.held_rows()

    def stop(self) -> None:
        if self._input is not None and not self._input.stop():
            raise RuntimeError("classic design: threads still alive after stop()")
