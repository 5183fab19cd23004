"""``torchdata.nodes``: keys → ``ParallelMapper`` (threads) → [``Unbatcher``] → ``Batcher`` →
``Mapper(default_collate)`` → ``Prefetcher`` → ``Loader``, as its documentation composes them.

``Batcher`` counts items, not rows: a map function that returns chunks is followed by
``Unbatcher`` so that rows are batched again — the closest equivalent of rebatching the
library offers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..data import Streams
from ..runner import Runner
from ..spec import Unavailable

__all__ = ["TorchdataRunner"]


class TorchdataRunner(Runner):
    def __init__(
        self,
        streams: Streams,
        keys: Callable[[], Iterable[Any]],
        map_fn: Callable[[Any], Any],
        *,
        batch_size: int,
        num_workers: int,
        unbatch: bool,
        in_order: bool = False,
        note: str,
    ) -> None:
        super().__init__(streams)
        try:
            import torchdata.nodes as tn
            from torch.utils.data import default_collate
        except Exception as exc:
            raise Unavailable(f"torchdata does not import: {type(exc).__name__}: {exc}") from exc
        self._tn = tn
        self._collate = default_collate
        self._keys = keys
        self._map_fn = map_fn
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._unbatch = unbatch
        self._in_order = in_order
        self._it: Iterator[Any] | None = None
        self._loader: Any = None
        self.note = note

    def start(self) -> None:
        tn = self._tn
        node = tn.IterableWrapper(self._keys())
        node = tn.ParallelMapper(
            node,
            map_fn=self._map_fn,
            num_workers=self._num_workers,
            in_order=self._in_order,
            method="thread",
        )
        if self._unbatch:
            node = tn.Unbatcher(node)
        node = tn.Batcher(node, batch_size=self._batch_size, drop_last=False)
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
