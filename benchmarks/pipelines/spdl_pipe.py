"""SPDL: ``PipelineBuilder`` with source → ``pipe(fetch, concurrency=C)`` → … →
``aggregate(batch_size)`` → ``pipe(collate)`` → sink, as its documentation builds them.

``aggregate(n)`` collects *items*: a stage that returns whole chunks is followed by
``disaggregate()`` so that rows are aggregated and stacked again — the closest equivalent
of rebatching SPDL offers. Sync stages run in the pipeline's thread pool, async ones on
SPDL's event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..data import Streams
from ..runner import Runner
from ..spec import Unavailable
from .source import stack_rows

__all__ = ["SpdlRunner", "import_spdl"]


def import_spdl() -> Any:
    try:
        from spdl.pipeline import PipelineBuilder
    except Exception as exc:
        raise Unavailable(f"spdl does not import: {type(exc).__name__}: {exc}") from exc
    return PipelineBuilder


class SpdlRunner(Runner):
    """Args:
    keys: makes the source iterable (it ends when the benchmark drains).
    stages: ``(op, concurrency)`` pairs, piped in order.
    batch_size: items per ``aggregate``.
    disaggregate: the last stage returns lists of rows; split them before aggregating.
    num_threads: the pipeline's thread pool.
    """

    def __init__(
        self,
        streams: Streams,
        keys: Callable[[], Iterable[Any]],
        stages: Sequence[tuple[Callable[[Any], Any], int]],
        *,
        batch_size: int,
        disaggregate: bool,
        num_threads: int,
        note: str,
    ) -> None:
        super().__init__(streams)
        self._builder_cls = import_spdl()
        self._keys = keys
        self._stages = list(stages)
        self._batch_size = batch_size
        self._disaggregate = disaggregate
        self._num_threads = num_threads
        self._pipeline: Any = None
        self.note = note

    def start(self) -> None:
        builder = self._builder_cls().add_source(self._keys())
        for op, concurrency in self._stages:
            builder = builder.pipe(op, concurrency=concurrency)
        if self._disaggregate:
            builder = builder.disaggregate()
        self._pipeline = (
            builder.aggregate(self._batch_size)
            .pipe(stack_rows)
            .add_sink(3)
            .build(num_threads=self._num_threads)
        )
        self._pipeline.start()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        try:
            return self._pipeline.get_item(timeout=timeout)  # type: ignore[no-any-return]
        except EOFError:
            return None

    def stop(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop(timeout=10)
