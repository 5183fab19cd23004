"""Picklable fetchers for the process-pool fault tests (imported by the worker processes)."""

from __future__ import annotations

import itertools
import os

import numpy as np

_calls = itertools.count()


def pid_rows(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Four identifiable rows: ids unique across processes, the maker's pid in ``pid``."""
    n = next(_calls)
    base = (os.getpid() << 24) | (n << 2)
    ids = np.arange(base, base + 4, dtype=np.int64)
    return [ids, np.repeat(ids.astype(np.float32)[:, None], 4, axis=1), np.full(4, os.getpid())]


def crash_at(call: int, worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Rows until this process's ``call``-th call, then die as a segfault would."""
    if next(_calls) == call:
        os._exit(13)
    return [np.zeros(2, np.int64)]
