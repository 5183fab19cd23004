"""The synthetic workloads' bounds: a rebatcher with no overhead at all, on one thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..data import RowSource, RowSpec, Streams
from ..runner import Phases

__all__ = ["copy_bound", "fetch_copy_bound"]


def copy_bound(
    spec: RowSpec, batch_size: int, phases: Phases, total_bytes: int = 256 << 20
) -> dict[str, Any]:
    """Single-thread ``np.copyto`` of chunks into batches; rows/s over ``phases.window``."""
    rng = np.random.default_rng(1)
    chunks: list[np.ndarray] = []
    size = 0
    while size < total_bytes:
        n = int(rng.integers(spec.min_rows, spec.max_rows + 1))
        chunk = np.ones((n, *spec.shape), spec.dtype)
        chunks.append(chunk)
        size += chunk.nbytes
    ring = [np.ones((batch_size, *spec.shape), spec.dtype) for _ in range(4)]

    def copy_for(seconds: float) -> tuple[int, float, float]:
        rows = 0
        fill = 0
        slot = 0
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for chunk in chunks:
                n = chunk.shape[0]
                pos = 0
                while pos < n:
                    take = min(batch_size - fill, n - pos)
                    np.copyto(ring[slot][fill : fill + take], chunk[pos : pos + take])
                    fill += take
                    pos += take
                    if fill == batch_size:
                        fill = 0
                        slot = (slot + 1) % len(ring)
                rows += n
                if time.perf_counter() >= deadline:
                    return rows, time.perf_counter() - start, time.process_time() - cpu

    result = _measured(copy_for, phases, batch_size)
    result["bytes_per_s"] = result["rows_per_s"] * spec.row_bytes
    return result


def fetch_copy_bound(spec: RowSpec, batch_size: int, phases: Phases) -> dict[str, Any]:
    """One thread calls the fetch (``RowSource.chunk``, as every pipeline's fetcher does)
    and copies each chunk into a ring of batch buffers: a pipeline with no overhead at all."""
    src = RowSource(spec, Streams())
    ring = [np.empty((batch_size, *spec.shape), spec.dtype) for _ in range(4)]

    def run_for(seconds: float) -> tuple[int, float, float]:
        rows = fill = slot = 0
        cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(256):
                chunk = src.chunk()
                assert chunk is not None
                n = chunk.shape[0]
                pos = 0
                while pos < n:
                    take = min(batch_size - fill, n - pos)
                    np.copyto(ring[slot][fill : fill + take], chunk[pos : pos + take])
                    fill += take
                    pos += take
                    if fill == batch_size:
                        fill = 0
                        slot = (slot + 1) % len(ring)
                rows += n
            if time.perf_counter() >= deadline:
                return rows, time.perf_counter() - start, time.process_time() - cpu

    return _measured(run_for, phases, batch_size)


def _measured(
    run_for: Callable[[float], tuple[int, float, float]], phases: Phases, batch_size: int
) -> dict[str, Any]:
    """Warm ``run_for`` up, time it over the window, and give the bound's figures.

    The copy loops stay written out in each bound (no call per chunk in what is timed).
    """
    run_for(phases.warmup)
    rows, secs, cpu_s = run_for(phases.window)
    return {
        "rows_per_s": rows / secs,
        "cpu_us_per_row": 1e6 * cpu_s / rows,
        "cpu_util": cpu_s / secs,
        "batches_per_s": rows / secs / batch_size,
        "window_s": secs,
        "window_rows": rows,
    }
