"""The rebatcher alone against the copy bound: what it costs per chunk, by chunk shape.

Chunks are made once (touched, more than the caches hold, as in the copy bound) and pushed
through ``asyncfeed.rebatch.Rebatcher`` on one thread, every batch dropped at once (a
consumer that keeps up, so buffers are recycled); the bound copies the same chunks into a
ring of batch buffers with ``np.copyto``. No feed, no queue, no event loop: the difference
is the rebatcher's own cost.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data import RowSpec

__all__ = ["CASES", "measure"]

CASES = {
    "rebatch workload: float32[3,64,64] rows (48 KiB), 1–200-row chunks": (
        RowSpec((3, 64, 64), "float32", 1, 200),
        128,
    ),
    "float32[3,64,64] rows, 1-row chunks (each above the 32 KiB small-chunk limit)": (
        RowSpec((3, 64, 64), "float32", 1, 1),
        128,
    ),
    "float32[256] rows (1 KiB), 1–32-row chunks (small path: views + concatenate)": (
        RowSpec((256,), "float32", 1, 32),
        256,
    ),
    "overhead workload: float32[16] rows, 1-row chunks (small path)": (
        RowSpec((16,), "float32", 1, 1),
        256,
    ),
}


def _chunks(spec: RowSpec, total_bytes: int, max_chunks: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out: list[np.ndarray] = []
    size = 0
    while size < total_bytes and len(out) < max_chunks:
        n = int(rng.integers(spec.min_rows, spec.max_rows + 1))
        chunk = np.ones((n, *spec.shape), spec.dtype)
        out.append(chunk)
        size += chunk.nbytes
    return out


def _rate(run: Any, chunks: list[np.ndarray], seconds: float) -> tuple[float, float, int]:
    """(rows/s, CPU µs per row, chunks per pass) of ``run(chunks)`` repeated for ``seconds``."""
    run(chunks)  # warm
    rows = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows += run(chunks)
    secs = time.perf_counter() - start
    return rows / secs, 1e6 * (time.process_time() - cpu) / rows, len(chunks)


def measure(seconds: float = 1.5, total_bytes: int = 256 << 20) -> list[dict[str, Any]]:
    from asyncfeed.rebatch import Rebatcher

    out = []
    for name, (spec, batch_size) in CASES.items():
        chunks = _chunks(spec, total_bytes, 400_000)
        rb = Rebatcher(["data"], batch_size)

        def through_rebatcher(chunks: list[np.ndarray], rb: Any = rb) -> int:
            rows = 0
            for chunk in chunks:
                rb.push([chunk])
                rows += chunk.shape[0]
            return rows

        ring = [np.ones((batch_size, *spec.shape), spec.dtype) for _ in range(4)]

        def copy_bound(
            chunks: list[np.ndarray], bs: int = batch_size, ring: list[np.ndarray] = ring
        ) -> int:
            rows = fill = slot = 0
            for chunk in chunks:
                n = chunk.shape[0]
                pos = 0
                while pos < n:
                    take = min(bs - fill, n - pos)
                    np.copyto(ring[slot][fill : fill + take], chunk[pos : pos + take])
                    fill += take
                    pos += take
                    if fill == bs:
                        fill = 0
                        slot = (slot + 1) % len(ring)
                rows += n
            return rows

        rb_rate, rb_cpu, n_chunks = _rate(through_rebatcher, chunks, seconds)
        b_rate, b_cpu, _ = _rate(copy_bound, chunks, seconds)
        rows_per_chunk = sum(c.shape[0] for c in chunks) / n_chunks
        out.append(
            {
                "case": name,
                "rows_per_chunk": rows_per_chunk,
                "rebatcher_rows_per_s": rb_rate,
                "bound_rows_per_s": b_rate,
                "share_of_bound": rb_rate / b_rate,
                "rebatcher_us_per_row": rb_cpu,
                "bound_us_per_row": b_cpu,
                "extra_us_per_chunk": (rb_cpu - b_cpu) * rows_per_chunk,
            }
        )
    return out
