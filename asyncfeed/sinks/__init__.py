"""Sinks: where a feed created with ``sink=`` hands its batches, from its bridge thread.

- :class:`BlobsQueue`: Caffe2's BlobsQueue semantics in pure Python; :class:`QueuePerBlob`:
  one such queue per blob, the layout of Caffe2's ``data_workers``.
- :class:`TorchSink`: batches as tensors on a torch device (torch is imported only when a
  ``TorchSink`` is created).
- ``asyncfeed.sinks.caffe2.Caffe2Sink``: Caffe2's own BlobsQueue ops, when ``caffe2`` imports.

Any object with ``put``, ``close`` and ``closed`` as in :class:`Sink` works as a sink. A sink
that also has ``allocate(shape, dtype) -> ndarray`` (see :class:`AllocatingSink`) gets its
batches built in arrays it made: :class:`TorchSink` hands out pinned memory that way, so
its copy to the GPU needs no staging copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..attribution import WaitWatch
from ..rebatch import Allocate
from .blobs_queue import BlobsQueue as BlobsQueue
from .blobs_queue import BlobsQueueStats as BlobsQueueStats
from .blobs_queue import QueuePerBlob as QueuePerBlob
from .torch import TorchSink as TorchSink
from .torch import TorchSinkStats as TorchSinkStats

__all__ = [
    "AllocatingSink",
    "BlobsQueue",
    "BlobsQueueStats",
    "QueuePerBlob",
    "Sink",
    "TorchSink",
    "TorchSinkStats",
    "WatchedSink",
    "allocator_of",
]


@runtime_checkable
class Sink(Protocol):
    """What a feed hands batches to. ``put`` is called from one dedicated thread."""

    def put(self, batch: Mapping[str, np.ndarray], /) -> bool:
        """Take one batch (blob name → array, in blob order), blocking while full.

        Returns True once the batch is accepted, False once the sink is closed (the feed
        then stops and counts the batch's rows as dropped, cause ``sink_closed``). Raising
        stops the feed with that error.
        """
        ...

    def close(self) -> None:
        """Close for good, waking every thread blocked in the sink. Idempotent, non-blocking."""
        ...

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        ...


@runtime_checkable
class AllocatingSink(Sink, Protocol):
    """A sink that makes the host arrays a feed builds its batches in."""

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any], /) -> np.ndarray:
        """An empty array of ``shape`` and ``dtype`` for one blob of a batch.

        Called on the feed's event loop, so it must not block for long. The feed may
        refill the array once the sink and the consumer no longer reference it.
        """
        ...


@runtime_checkable
class WatchedSink(Sink, Protocol):
    """A sink that tells the feed when its reader waits, so the waits are attributed."""

    def watch(self, watch: WaitWatch | None, /) -> None:
        """Report every read that has to wait to ``watch`` (None: stop reporting)."""
        ...


def allocator_of(sink: Sink) -> Allocate | None:
    """``sink.allocate`` when the sink makes its own batch arrays, else None."""
    return sink.allocate if isinstance(sink, AllocatingSink) else None
