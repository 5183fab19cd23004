"""Sinks: where a feed created with ``sink=`` hands its batches, from its bridge thread.

- :class:`BlobsQueue`: Caffe2's BlobsQueue semantics in pure Python; :class:`QueuePerBlob`:
  one such queue per blob, the layout of Caffe2's ``data_workers``.
- :class:`TorchSink`: batches as tensors on a torch device (torch is imported only when a
  ``TorchSink`` is created).
- ``asyncfeed.sinks.caffe2.Caffe2Sink``: Caffe2's own BlobsQueue ops, when ``caffe2`` imports.

Any object with ``put``, ``close`` and ``closed`` as in :class:`Sink` works as a sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from .blobs_queue import BlobsQueue as BlobsQueue
from .blobs_queue import BlobsQueueStats as BlobsQueueStats
from .blobs_queue import QueuePerBlob as QueuePerBlob
from .torch import TorchSink as TorchSink

__all__ = ["BlobsQueue", "BlobsQueueStats", "QueuePerBlob", "Sink", "TorchSink"]


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
