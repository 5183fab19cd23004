"""Picklable fetchers for process-pool tests (importable by child processes)."""

from __future__ import annotations

import os

import numpy as np


def pid_rows(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Three rows tagged with the worker id and the process id that made them."""
    return [np.full(3, worker_id, np.int64), np.full(3, os.getpid(), np.int64)]


def crash(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Kill the worker process outright, as a segfault would."""
    os._exit(13)
