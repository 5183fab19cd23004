"""The shared-memory ring of a worker process: chunk data without a copy through the socket.

Chunk data above :data:`INLINE_MAX_BYTES` travels through a per-worker :class:`Ring`: an
anonymous ``memfd`` the feed's process creates and hands to the worker over the socket.
The worker allocates a slot (:class:`RingAllocator`), copies the arrays in and sends only
their layout (:func:`block_layout`); the feed's process maps them as zero-copy numpy views
and frees the slot when the last view is garbage, so a slot is never refilled while any
view of it lives. Nothing is ever named in ``/dev/shm``, so nothing can leak: the memory
goes when the last process mapping it does. Where ``memfd_create`` is missing every chunk
travels inline.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import numpy as np

from .wire import FREE

__all__ = [
    "ALIGN",
    "INLINE_MAX_BYTES",
    "RING_BYTES",
    "Layout",
    "Ring",
    "RingAllocator",
    "arrays_from_block",
    "block_layout",
    "create_ring_fd",
]

INLINE_MAX_BYTES = 32 * 1024  # chunk data up to this size travels in the frame
RING_BYTES = 64 * 1024 * 1024  # per worker; pages are touched only as slots are used
ALIGN: Final = 64

Layout = list[tuple[Any, tuple[int, ...], int]]  # (dtype, shape, offset in the block)


def block_layout(arrays: Sequence[np.ndarray]) -> tuple[Layout, int]:
    """Where each array goes in one contiguous block (64-byte aligned), and the block size."""
    layout: Layout = []
    pos = 0
    for arr in arrays:
        dtype = arr.dtype
        portable: Any = dtype.str if np.dtype(dtype.str) == dtype else dtype
        layout.append((portable, arr.shape, pos))
        pos += -(-arr.nbytes // ALIGN) * ALIGN
    return layout, pos


def arrays_from_block(block: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """Numpy views of ``block`` (a uint8 array) laid out by :func:`block_layout`."""
    out = []
    for dtype, shape, offset in layout:
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * math.prod(shape)
        out.append(block[offset : offset + nbytes].view(dt).reshape(shape))
    return out


@final
class RingAllocator:
    """First-fit allocation of ring slots, lowest offset first (so unused pages stay untouched).

    Used by the worker only, on its event loop. Slots may be freed in any order.
    """

    __slots__ = ("_free", "size")

    def __init__(self, size: int) -> None:
        self.size: Final = size
        self._free: list[tuple[int, int]] = [(0, size)] if size else []  # sorted (start, size)

    def allocate(self, nbytes: int) -> int | None:
        """Offset of a free slot of ``nbytes`` (rounded up to 64), or None when full."""
        need = -(-nbytes // ALIGN) * ALIGN
        for i, (start, size) in enumerate(self._free):
            if size >= need:
                if size == need:
                    del self._free[i]
                else:
                    self._free[i] = (start + need, size - need)
                return start
        return None

    def free(self, start: int, nbytes: int) -> None:
        """Give a slot back; merges it with free neighbours."""
        size = -(-nbytes // ALIGN) * ALIGN
        free = self._free
        i = bisect.bisect(free, (start, 0))
        if i < len(free) and start + size == free[i][0]:
            size += free[i][1]
            del free[i]
        if i > 0 and free[i - 1][0] + free[i - 1][1] == start:
            start, size = free[i - 1][0], free[i - 1][1] + size
            del free[i - 1]
            i -= 1
        free.insert(i, (start, size))

    @property
    def free_bytes(self) -> int:
        return sum(size for _, size in self._free)


def create_ring_fd(size: int) -> int | None:
    """An anonymous shared-memory file of ``size`` bytes, or None where unsupported."""
    create = getattr(os, "memfd_create", None)
    if create is None or size <= 0:
        return None
    fd: int = create("asyncfeed-ring", getattr(os, "MFD_CLOEXEC", 0))
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


@final
class Ring:
    """The feed-side mapping of one worker's ring: zero-copy views and their release.

    A slot is freed once every array viewing it is garbage: a weak reference on the slot's
    uint8 holder (which numpy keeps as the base of every view) queues the slot, and the
    queue is sent to the worker as one FREE message per loop iteration.
    """

    __slots__ = ("_flush_scheduled", "_leases", "_loop", "_pending", "_send", "_tid", "mm")

    def __init__(
        self,
        fd: int,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[tuple[Any, ...]], None],
        thread_id: int,
    ) -> None:
        self.mm: mmap.mmap | None = mmap.mmap(fd, os.fstat(fd).st_size)
        self._loop: Final = loop
        self._send: Final = send
        self._tid: Final = thread_id
        self._leases: dict[int, Any] = {}
        self._pending: list[tuple[int, int]] = []
        self._flush_scheduled = False

    def view(self, start: int, nbytes: int, layout: Layout) -> list[np.ndarray] | None:
        """The arrays of one slot, as views that keep the slot until they are all gone.

        None once the ring is closed (the worker is stopping: its results are not wanted).
        """
        if self.mm is None:
            return None
        holder = np.frombuffer(self.mm, np.uint8, nbytes, start)
        self._leases[start] = weakref.ref(holder, self._released_cb(start, nbytes))
        return arrays_from_block(holder, layout)

    def _released_cb(self, start: int, nbytes: int) -> Callable[[Any], None]:
        def released(_: Any) -> None:
            self._leases.pop(start, None)
            if self.mm is None:  # the worker is gone: nobody to tell
                return
            try:
                if threading.get_ident() == self._tid:
                    self._queue_free(start, nbytes)
                else:
                    self._loop.call_soon_threadsafe(self._queue_free, start, nbytes)
            except RuntimeError:  # the loop is closed: the worker is gone too
                pass

        return released

    def _queue_free(self, start: int, nbytes: int) -> None:
        self._pending.append((start, nbytes))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if pending and self.mm is not None:
            self._send((FREE, pending))

    def close(self) -> None:
        """Stop sending frees; the mapping itself goes when the last view does."""
        self.mm = None
