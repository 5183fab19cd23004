"""Batches as torch tensors on a device.

torch is imported when a :class:`TorchSink` is created, never by ``import asyncfeed``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast, final

import numpy as np

from ..attribution import WaitWatch
from ..errors import ConfigError, RecordError
from ..options import check_positive_int
from .closable_queue import ClosableQueue
from .convert import Conversion

if TYPE_CHECKING:
    import torch

__all__ = ["TorchSink", "TorchSinkStats", "host_tensor", "torch_dtypes"]

log = logging.getLogger("asyncfeed.sinks.torch")

#: Staging copies of at least this many bytes use torch's parallel copy; smaller ones numpy
#: (measured on an H200 host: 0.4 MB 12 µs with numpy, 26 µs with torch; 9.8 MB 800 µs
#: with numpy, 93 µs with torch's 16 threads; ``python -m benchmarks.cuda_costs``).
TORCH_COPY_MIN: Final = 1 << 20

# numpy dtypes that torch.from_numpy takes, by name (torch has a dtype of each name).
_DTYPE_NAMES: Final = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


def torch_dtypes(torch_mod: Any) -> dict[np.dtype[Any], torch.dtype]:
    """The numpy → torch dtype map, for every numpy dtype this torch can hold."""
    return {np.dtype(n): getattr(torch_mod, n) for n in _DTYPE_NAMES if hasattr(torch_mod, n)}


def host_tensor(
    torch_mod: Any, name: str, arr: np.ndarray, dtypes: Mapping[np.dtype[Any], torch.dtype]
) -> torch.Tensor:
    """A CPU tensor of ``arr``: sharing its memory where torch allows, else a copy.

    Shared (``torch.from_numpy``) for writable arrays in native byte order with non-negative
    strides; otherwise copied.

    Raises:
        RecordError: the dtype has no torch equivalent; the message names the blob.
    """
    dtype = arr.dtype
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
        dtype = arr.dtype
    if dtype not in dtypes:
        supported = ", ".join(str(d) for d in dtypes)
        raise RecordError(
            f"blob {name!r}: numpy dtype {dtype} has no torch equivalent (supported: {supported})"
        )
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        arr = arr.copy(order="C")
    tensor: torch.Tensor = torch_mod.from_numpy(arr)
    return tensor


@dataclass(frozen=True, slots=True)
class TorchSinkStats:
    """A snapshot of a :class:`TorchSink`'s counters.

    Attributes:
        size: batches held now (ready or being copied: not yet taken by :meth:`get`).
        capacity: the most batches held.
        batches_in: batches accepted by ``put``.
        batches_out: batches returned by ``get``.
        bytes_in: host bytes of the accepted batches.
        staged: CUDA batches copied through the sink's pinned staging ring.
        direct: CUDA batches copied straight from their own memory, with no staging copy:
            pinned buffers from :meth:`TorchSink.allocate`, or any batch with
            ``pin_memory=False``.
        closed: True once closed.
    """

    size: int
    capacity: int
    batches_in: int
    batches_out: int
    bytes_in: int
    staged: int
    direct: int
    closed: bool


@final
class _Ready:
    """A batch on the device, and the event after which its copies are complete."""

    __slots__ = ("event", "nbytes", "tensors")

    def __init__(
        self, tensors: dict[str, torch.Tensor], event: torch.cuda.Event | None, nbytes: int
    ) -> None:
        self.tensors: Final = tensors
        self.event: Final = event
        self.nbytes: Final = nbytes


@final
class _Slot:
    """One place of the copy ring: pinned staging buffers (one per blob, reused across
    batches), the host memory its last copies read, and the event after which they are done.
    """

    __slots__ = ("buffers", "event", "keep")

    def __init__(self, torch_mod: Any) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        # Recorded after the copies that read this slot. One event per slot, recorded again
        # for each batch: a consumer that waits on it after it was recorded again waits for
        # a later copy, never an earlier one.
        self.event: torch.cuda.Event = torch_mod.cuda.Event()
        self.keep: object = None  # the batch and host tensors those copies read

    def settle(self) -> None:
        """Wait until the copies that last read this slot are complete; let go of their input."""
        if self.keep is not None:
            self.event.synchronize()
            self.keep = None

    def stage(self, torch_mod: Any, name: str, src: torch.Tensor) -> torch.Tensor:
        """``src`` copied into this slot's pinned buffer for blob ``name`` (reallocated only
        when ``src`` does not fit).

        Below :data:`TORCH_COPY_MIN` bytes numpy copies on this thread; larger copies use
        torch's intra-op threads, several times faster on big batches.
        """
        buf = self.buffers.get(name)
        rows = src.shape[0]
        if (
            buf is None
            or buf.dtype != src.dtype
            or buf.shape[1:] != src.shape[1:]
            or buf.shape[0] < rows
        ):
            buf = torch_mod.empty(tuple(src.shape), dtype=src.dtype, pin_memory=True)
            self.buffers[name] = buf
        staged = buf[:rows]
        if src.nbytes < TORCH_COPY_MIN:
            np.copyto(staged.numpy(), src.numpy())
        else:
            staged.copy_(src)
        return staged


@final
class TorchSink:
    """Delivers batches as dicts of torch tensors on ``device``; consumers call :meth:`get`.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        capacity: the most batches held by the sink (on the device, for CUDA), counting one
            being copied; ``put`` blocks beyond it.
        pin_memory: CUDA only. True copies from pinned host memory, so the device copy is
            asynchronous: a batch already in pinned memory (a feed builds its batches in
            buffers from :meth:`allocate`) is copied as it is; any other goes through a ring
            of ``capacity + 1`` pinned staging slots, allocated once and reused. False copies
            from pageable memory.
        normalize: ``(mean, std)`` for ``blob``, each a number or one per channel on the
            [0, 1] scale: ``(x / 255 - mean) / std`` for a uint8 batch, computed after the
            copy (on the GPU for CUDA), as torchvision's ``ToTensor`` + ``Normalize``.
        layout: ``"NHWC"`` (default: as the batch comes) or ``"NCHW"`` (``blob`` must be an
            ``[N, H, W, C]`` batch; the result is contiguous).
        dtype: ``blob``'s dtype on the device: None (default: the batch's, or float32 with
            ``normalize``), a torch dtype or its name (``"float16"``, ``"bfloat16"``...). A
            uint8 batch made floating is scaled to [0, 1].
        blob: the blob ``normalize``, ``layout`` and ``dtype`` apply to (default
            ``"data"``); other blobs arrive as they are.

    Converting on the device lets uint8 images cross PCIe (4x fewer bytes than float32); the
    conversion is one kernel on the copy stream, before the copy's event, so ``get``'s
    stream sees converted tensors. On the CPU, a converted blob is a new tensor.

    On the CPU, tensors share memory with the batch's arrays (``torch.from_numpy``); a
    read-only or negatively strided array, or one in non-native byte order, is copied.

    On CUDA, each batch is copied with ``non_blocking=True`` on a dedicated stream, then an
    event is recorded. :meth:`get` makes the caller's current stream wait on that event (the
    host does not wait) and records the tensors on that stream, so the caching allocator
    does not reuse their memory while work queued there may still read it. The host memory
    a copy reads (the batch, or its staging slot) is neither released nor refilled before
    that copy's event has completed. Device memory holds at most ``capacity`` batches
    besides those the consumer keeps.

    ``put`` is meant for one producer thread (a feed's bridge thread); ``get`` may be called
    from any thread.

    Raises:
        ConfigError: torch is missing, the device is unknown or unavailable, or ``capacity``
            or ``pin_memory`` is invalid.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        capacity: int = 2,
        pin_memory: bool = True,
        normalize: tuple[Any, Any] | None = None,
        layout: Literal["NHWC", "NCHW"] = "NHWC",
        dtype: torch.dtype | str | None = None,
        blob: str = "data",
    ) -> None:
        try:
            tm: Any = importlib.import_module("torch")
        except ImportError as exc:
            raise ConfigError("TorchSink needs torch: pip install 'asyncfeed[torch]'") from exc
        self._torch: Final[Any] = tm
        try:
            dev = tm.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device must name a torch device, got {device!r}") from exc
        if dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if dev.type == "cuda":
            if not tm.cuda.is_available():
                raise ConfigError(f"device {device!r} was asked for, but CUDA is not available")
            if dev.index is None:
                dev = tm.device("cuda", tm.cuda.current_device())
            if dev.index >= tm.cuda.device_count():
                raise ConfigError(
                    f"device {device!r} was asked for, but this machine has "
                    f"{tm.cuda.device_count()} CUDA device(s)"
                )
        if not isinstance(cast(object, pin_memory), bool):
            raise ConfigError(f"pin_memory must be a bool, got {pin_memory!r}")
        self.device: Final = dev
        self.capacity: Final = check_positive_int("capacity", capacity)
        self.pin_memory: Final = pin_memory
        self._convert: Final = Conversion(
            tm, normalize=normalize, layout=layout, dtype=dtype, blob=blob
        )
        self._dtypes: Final = torch_dtypes(tm)
        self._queue: Final[ClosableQueue[_Ready]] = ClosableQueue(capacity, _weigh)
        self._cuda: Final = dev.type == "cuda"
        self._stream: Any = tm.cuda.Stream(device=dev) if self._cuda else None
        self._ring: Final = [_Slot(tm) for _ in range(capacity + 1)] if self._cuda else []
        self._next = 0
        self._staged = 0
        self._direct = 0
        self._pinning = self._cuda and pin_memory  # False after a pinned allocation failed

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<TorchSink device={self.device} {len(self._queue)}/{self.capacity} {state}>"

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._queue.closed

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """An empty host array for a batch: pinned memory when this sink copies to CUDA from
        pinned memory, so ``put`` copies it to the device directly; ``numpy.empty`` otherwise.

        A feed makes its batch buffers here (see ``Rebatcher``'s ``allocate``). Pinned
        memory comes from torch's caching host allocator; should it fail, this sink falls
        back to ``numpy.empty`` (and staging) for good, with one warning.
        """
        tdtype = self._dtypes.get(np.dtype(dtype)) if self._pinning else None
        if tdtype is None:
            return np.empty(shape, dtype)
        try:
            tensor = self._torch.empty(shape, dtype=tdtype, pin_memory=True)
        except RuntimeError as exc:
            self._pinning = False
            log.warning("%r: no pinned memory for a batch (%s); staging batches instead", self, exc)
            return np.empty(shape, dtype)
        array: np.ndarray = tensor.numpy()  # keeps the tensor, and its pinned block, alive
        return array

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        """Move one batch to the device, blocking while the sink is full; False once closed.

        Raises:
            RecordError: an array's dtype has no torch equivalent, or the blob to convert
                is missing or of the wrong shape.
        """
        if not self._queue.reserve():
            return False
        try:
            ready = self._to_device(batch)
        except BaseException:
            self._queue.release()
            raise
        return self._queue.commit(ready)

    def get(self, *, timeout: float | None = None) -> dict[str, torch.Tensor] | None:
        """The oldest batch as blob name → tensor on the device; None once closed and drained.

        On CUDA the tensors are ready for the caller's current stream; call from the thread
        (and stream) that uses them.

        Raises:
            FeedTimeoutError: (a ``TimeoutError``) nothing within ``timeout`` s, sink open.
        """
        return self._hand_over(self._queue.get(timeout))

    async def aget(self) -> dict[str, torch.Tensor] | None:
        """:meth:`get` for a consumer on an event loop: waits without blocking the loop."""
        return self._hand_over(await self._queue.aget())

    def close(self) -> None:
        """Close for good, waking blocked ``put`` and ``get``; queued batches stay readable."""
        self._queue.close()

    def watch(self, watch: WaitWatch | None) -> None:
        """Report every read that has to wait to ``watch`` (a feed attributes the waits)."""
        self._queue.watch(watch)

    def stats(self) -> TorchSinkStats:
        """A snapshot of the sink's counters."""
        size, puts, gets, bytes_in, _ = self._queue.counters()
        return TorchSinkStats(
            size=size,
            capacity=self.capacity,
            batches_in=puts,
            batches_out=gets,
            bytes_in=bytes_in,
            staged=self._staged,
            direct=self._direct,
            closed=self.closed,
        )

    def _hand_over(self, ready: _Ready | None) -> dict[str, torch.Tensor] | None:
        if ready is None:
            return None
        event = ready.event
        if event is not None:
            stream = self._torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for tensor in ready.tensors.values():
                tensor.record_stream(stream)
        return ready.tensors

    def _to_device(self, batch: Mapping[str, np.ndarray]) -> _Ready:
        tm = self._torch
        convert = self._convert
        convert.check(batch)
        hosts = {name: host_tensor(tm, name, arr, self._dtypes) for name, arr in batch.items()}
        nbytes = sum(arr.nbytes for arr in batch.values())
        if not self._cuda:
            if convert.active:
                hosts[convert.blob] = convert.apply(hosts[convert.blob])
            return _Ready(hosts, None, nbytes)
        slot = self._ring[self._next % len(self._ring)]
        self._next += 1
        slot.settle()
        out: dict[str, torch.Tensor] = {}
        staged = False
        with tm.cuda.stream(self._stream):
            for name, host in hosts.items():
                src = host
                if self.pin_memory and not host.is_pinned():
                    src = slot.stage(tm, name, host)
                    staged = True
                out[name] = src.to(self.device, non_blocking=True)
                if convert.active and name == convert.blob:  # on the copy stream, after it
                    out[name] = convert.apply(out[name])
            slot.event.record(self._stream)
        slot.keep = (batch, hosts)
        if staged:
            self._staged += 1
        else:
            self._direct += 1
        return _Ready(out, slot.event, nbytes)


def _weigh(ready: _Ready) -> int:
    return ready.nbytes
