"""PyTorch ``DataLoader`` over an ``IterableDataset``, as its documentation recommends.

Each worker process (or the main process with ``num_workers=0``) iterates its own share of the
data and yields *rows*; the DataLoader batches them with ``batch_size`` and
``default_collate`` (``torch.stack`` into tensors). That is the DataLoader's equivalent of
rebatching: it cannot concatenate chunks, so chunks are split into rows and stacked again.
Batches are built per worker, so the rows of a batch come from one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..data import Streams
from ..runner import Runner
from ..spec import Unavailable
from .source import Row

__all__ = ["DataLoaderRunner"]


def _import_torch() -> Any:
    try:
        import torch
        import torch.utils.data
    except Exception as exc:  # ImportError, or a broken install
        raise Unavailable(f"torch does not import: {type(exc).__name__}: {exc}") from exc
    return torch


def _make_dataset(torch: Any, worker_rows: Callable[[int, int], Iterator[Row]]) -> Any:
    class RowStream(torch.utils.data.IterableDataset):  # type: ignore[misc]
        """Each worker takes its share via ``get_worker_info()``, as the docs show."""

        def __iter__(self) -> Iterator[Row]:
            info = torch.utils.data.get_worker_info()
            if info is None:
                return worker_rows(-1, 0)
            return worker_rows(info.id, info.num_workers)

    return RowStream()


class DataLoaderRunner(Runner):
    """``DataLoader(IterableDataset, batch_size, num_workers)``, iterated to the end."""

    def __init__(
        self,
        streams: Streams,
        worker_rows: Callable[[int, int], Iterator[Row]],
        *,
        batch_size: int,
        num_workers: int,
        note: str = "",
    ) -> None:
        super().__init__(streams)
        self._torch = _import_torch()
        self._worker_rows = worker_rows
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._it: Iterator[Any] | None = None
        self.note = note or "rows re-stacked by default_collate (cannot concatenate chunks)"

    def start(self) -> None:
        torch = self._torch
        loader = torch.utils.data.DataLoader(
            _make_dataset(torch, self._worker_rows),
            batch_size=self._batch_size,
            num_workers=self._num_workers,
            persistent_workers=False,
        )
        self._it = iter(loader)

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        assert self._it is not None
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        return list(batch) if isinstance(batch, list | tuple) else [batch]

    def stop(self) -> None:
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del it
