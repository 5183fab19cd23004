"""``torchdata.nodes``: keys → ``ParallelMapper`` (threads) → ``Unbatcher`` → ``Batcher`` →
``Mapper(default_collate)`` → ``Prefetcher`` → ``Loader``, as its documentation composes them.

``Batcher`` counts items, not rows: chunks are unbatched into rows first and rows batched
again, the closest equivalent of rebatching that the library offers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..data import Streams
from ..runner import Runner
from ..spec import Unavailable
from .source import KeyedSource

__all__ = ["TorchdataRunner"]


class TorchdataRunner(Runner):
    def __init__(
        self,
        streams: Streams,
        source: KeyedSource,
        *,
        num_workers: int,
        in_order: bool = False,
        note: str = "",
    ) -> None:
        super().__init__(streams)
        try:
            import torchdata.nodes as tn
            from torch.utils.data import default_collate
        except Exception as exc:
            raise Unavailable(f"torchdata does not import: {type(exc).__name__}: {exc}") from exc
        self._tn = tn
        self._collate = default_collate
        self._source = source
        self._num_workers = num_workers
        self._in_order = in_order
        self._it: Iterator[Any] | None = None
        self._loader: Any = None
        self.note = note or "ParallelMapper threads; chunks unbatched to rows, Batcher re-batches"

    def start(self) -> None:
        tn = self._tn
        src = self._source
        node = tn.IterableWrapper(src.keys())
        node = tn.ParallelMapper(
            node,
            map_fn=src.fetch_rows,
            num_workers=self._num_workers,
            in_order=self._in_order,
            method="thread",
        )
        node = tn.Unbatcher(node)
        node = tn.Batcher(node, batch_size=src.batch_size, drop_last=False)
        node = tn.Mapper(node, map_fn=self._collate)
        node = tn.Prefetcher(node, prefetch_factor=2)
        self._loader = tn.Loader(node)
        self._it = iter(self._loader)

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        assert self._it is not None
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        return list(batch) if isinstance(batch, list | tuple) else [batch]

    def stop(self) -> None:
        self._it = None
        self._loader = None
