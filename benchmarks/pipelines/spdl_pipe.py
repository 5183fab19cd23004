"""SPDL: ``PipelineBuilder`` with source → ``pipe(fetch, concurrency=C)`` → ``disaggregate()``
→ ``aggregate(batch_size)`` → ``pipe(collate)`` → sink, as its documentation builds them.

``aggregate(n)`` collects *items*: chunks are disaggregated into rows first and the rows
aggregated and stacked again, the closest equivalent of rebatching SPDL offers. A sync fetch
runs in the pipeline's thread pool; an async one on SPDL's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data import Streams
from ..runner import Runner
from ..spec import Unavailable
from .source import KeyedSource, stack_rows

__all__ = ["SpdlRunner"]


class SpdlRunner(Runner):
    def __init__(
        self,
        streams: Streams,
        source: KeyedSource,
        *,
        concurrency: int,
        use_async: bool = False,
        num_threads: int | None = None,
        note: str = "",
    ) -> None:
        super().__init__(streams)
        try:
            from spdl.pipeline import PipelineBuilder
        except Exception as exc:
            raise Unavailable(f"spdl does not import: {type(exc).__name__}: {exc}") from exc
        if use_async and source.afetch is None:
            raise Unavailable("this workload offers no async fetch for SPDL")
        self._builder_cls = PipelineBuilder
        self._source = source
        self._concurrency = concurrency
        self._use_async = use_async
        self._num_threads = num_threads or concurrency
        self._pipeline: Any = None
        kind = "async fetch" if use_async else "fetch in thread pool"
        self.note = note or f"{kind}; rows disaggregated, aggregate(n) + np.stack"

    def start(self) -> None:
        src = self._source
        op = src.afetch_rows if self._use_async else src.fetch_rows
        self._pipeline = (
            self._builder_cls()
            .add_source(src.keys())
            .pipe(op, concurrency=self._concurrency)
            .disaggregate()
            .aggregate(src.batch_size)
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
