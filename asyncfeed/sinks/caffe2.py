"""Caffe2's own BlobsQueue ops as a sink, as the classic ``data_workers`` module used them.

Caffe2 is end-of-life and does not install on a current Python, so this module is tested
against a test double of the ``workspace`` / ``core`` calls it makes, not against Caffe2.
:func:`load_caffe2` returns the real modules when ``caffe2.python`` imports.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import numpy as np

from ..errors import ConfigError, RecordError
from ..options import check_blobs, check_positive_int

__all__ = ["C2_QUEUE_CAPACITY", "Caffe2Modules", "Caffe2Sink", "load_caffe2"]

log = logging.getLogger("asyncfeed.sinks.caffe2")

C2_QUEUE_CAPACITY: Final = 4  # the capacity data_workers gave every Caffe2 queue


@dataclass(frozen=True, slots=True)
class Caffe2Modules:
    """The Caffe2 modules the sink calls: ``caffe2.python.workspace``, ``core`` and ``scope``.

    ``cpu`` is ``caffe2_pb2.CPU``, the device type of the default device option.
    """

    workspace: Any
    core: Any
    scope: Any
    cpu: int = 0


def load_caffe2() -> Caffe2Modules | None:
    """The real Caffe2 modules, or None when ``caffe2.python`` does not import."""
    try:
        caffe2_pb2 = importlib.import_module("caffe2.proto.caffe2_pb2")
        core = importlib.import_module("caffe2.python.core")
        scope = importlib.import_module("caffe2.python.scope")
        workspace = importlib.import_module("caffe2.python.workspace")
    except Exception:  # not installed, or an install that no longer loads
        log.debug("caffe2.python does not import", exc_info=True)
        return None
    return Caffe2Modules(workspace, core, scope, int(caffe2_pb2.CPU))


@final
class Caffe2Sink:
    """Feeds one Caffe2 BlobsQueue per blob; the net reads them with ``DequeueBlobs`` ops.

    What Caffe2's ``data_workers`` did, call for call: at construction, one
    ``CreateBlobsQueue`` per blob (``num_blobs=1``, named
    ``<namescope><blob>_c2queue_<source>``), a ``DequeueBlobs`` op per blob added to ``net``
    (with ``timeout_secs``), and scratch blobs ``<namescope><blob>_scratch_<source>`` fed
    once on ``device_option``. ``put`` feeds each array into its scratch blob on
    ``device_option`` and runs ``SafeEnqueueBlobs`` with that device option; the op's status
    output is true when the queue was closed and nothing was enqueued, and ``put`` then
    returns False. ``close`` runs ``CloseBlobsQueue`` on every queue.

    Args:
        net: the Caffe2 net (``core.Net``) that dequeues the batches.
        blobs: blob names, in batch order.
        source: the input source name, part of the queue names.
        device_option: where scratch blobs live and the enqueue runs; default CPU.
        namescope: prefix of the queue and scratch blob names.
        capacity: records per queue.
        timeout: ``DequeueBlobs`` timeout in seconds.
        caffe2: the modules to call; default :func:`load_caffe2`.

    Raises:
        ConfigError: Caffe2 does not import, or an argument is invalid.
    """

    def __init__(
        self,
        net: Any,
        blobs: Sequence[str],
        *,
        source: str = "train",
        device_option: Any = None,
        namescope: str = "",
        capacity: int = C2_QUEUE_CAPACITY,
        timeout: float = 600.0,
        caffe2: Caffe2Modules | None = None,
    ) -> None:
        c2 = caffe2 if caffe2 is not None else load_caffe2()
        if c2 is None:
            raise ConfigError("a Caffe2 net was given, but caffe2.python does not import")
        self.blobs: Final = check_blobs(blobs)
        check_positive_int("capacity", capacity)
        self._ws: Final = c2.workspace
        self._core: Final = c2.core
        self.device_option: Final = (
            device_option if device_option is not None else c2.core.DeviceOption(c2.cpu)
        )
        self._closed = False
        self.queues: Final[tuple[Any, ...]] = tuple(
            self._create_queue(f"{namescope}{b}_c2queue_{source}", capacity) for b in self.blobs
        )
        for q, b in zip(self.queues, self.blobs, strict=True):
            net.DequeueBlobs(q, b, timeout_secs=float(timeout))
        scratch = [f"{namescope}{b}_scratch_{source}" for b in self.blobs]
        self._scratch: Final = tuple(c2.core.BlobReference(s) for s in scratch)
        self._status: Final = tuple(c2.core.BlobReference(s + "_status") for s in scratch)
        # Created here, not from the bridge thread, as data_workers did to avoid racing
        # FeedBlob's blob creation with the net.
        for blob in (*self._scratch, *self._status):
            self._ws.FeedBlob(blob, np.array([], np.float32), device_option=self.device_option)

    def _create_queue(self, name: str, capacity: int) -> Any:
        # A BlobReference, not a str: CreateOperator would prefix a str with the name scope.
        ref = self._core.BlobReference(name)
        self._ws.RunOperatorOnce(
            self._core.CreateOperator("CreateBlobsQueue", [], [ref], num_blobs=1, capacity=capacity)
        )
        return ref

    def __repr__(self) -> str:
        return f"<Caffe2Sink {[str(q) for q in self.queues]}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        """Enqueue each blob into its Caffe2 queue, blocking while full; False once closed.

        Raises:
            RecordError: the batch's blobs are not the sink's.
        """
        if tuple(batch) != self.blobs:
            raise RecordError(f"expected blobs {list(self.blobs)}, got {list(batch)}")
        for name, q, scratch, status in zip(
            self.blobs, self.queues, self._scratch, self._status, strict=True
        ):
            self._ws.FeedBlob(
                scratch, np.ascontiguousarray(batch[name]), device_option=self.device_option
            )
            self._ws.RunOperatorOnce(
                self._core.CreateOperator(
                    "SafeEnqueueBlobs",
                    [q, scratch],
                    [scratch, status],
                    device_option=self.device_option,
                )
            )
            if bool(np.asarray(self._ws.FetchBlob(status)).reshape(-1)[0]):
                self._closed = True  # status true: the queue is closed, nothing was enqueued
                return False
        return True

    def close(self) -> None:
        """Run ``CloseBlobsQueue`` on every queue, waking blocked readers and writers."""
        self._closed = True
        for q in self.queues:
            try:
                self._ws.RunOperatorOnce(self._core.CreateOperator("CloseBlobsQueue", [q], []))
            except Exception:
                log.exception("CloseBlobsQueue on %s failed", q)
