"""Leak checks for ``processes=N`` tests: no worker process, zombie or shared memory left.

Shared memory is checked two ways: no ring mapping (``memfd:asyncfeed-ring``) outlives the
test in this process, and no segment that Python's ``shared_memory`` or asyncfeed would name
(``psm_*``, ``*asyncfeed*``) appears in ``/dev/shm``. Other entries there (named semaphores,
torch segments) belong to other programs on the machine and are not looked at.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psutil

SHM = "/dev/shm"


def _shm() -> set[str]:
    names = os.listdir(SHM) if os.path.isdir(SHM) else []
    return {n for n in names if n.startswith("psm_") or "asyncfeed" in n}


def _ring_mappings() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            return [line.strip() for line in maps if "asyncfeed-ring" in line]
    except OSError:  # not Linux
        return []


def _children() -> dict[int, psutil.Process]:
    """Child processes other than multiprocessing's long-lived helpers."""
    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            cmdline = ""
        if "resource_tracker" in cmdline or "forkserver" in cmdline:
            continue
        out[child.pid] = child
    return out


def worker_processes() -> list[multiprocessing.process.BaseProcess]:
    """The live worker processes of every feed in this process."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("asyncfeed-")]


@contextmanager
def no_leaks() -> Iterator[None]:
    """Fail if the block leaves a worker process, a zombie or a /dev/shm entry behind."""
    shm = _shm()
    before = set(_children())
    yield
    assert worker_processes() == []
    left = []
    for pid, child in _children().items():
        if pid in before:
            continue
        try:
            left.append(f"{pid} {child.status()}")
        except psutil.NoSuchProcess:
            pass
    assert not left, f"child processes left behind: {left}"
    assert _shm() <= shm, f"shared memory left behind: {sorted(_shm() - shm)}"
    gc.collect()
    assert not _ring_mappings(), "a worker's ring is still mapped"


def array_root(arr: np.ndarray) -> object:
    """The object at the end of an array's base chain."""
    base: object = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base
