"""overhead: 1-row float32[16] chunks, batch 256 — the pipeline's cost per chunk and row."""

from __future__ import annotations

from typing import Any

from ..data import RowSpec
from .base import Target
from .synthetic import SyntheticWorkload
from .targets import ratio_target


class Overhead(SyntheticWorkload):
    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        return [
            ratio_target(summary, "classic", 5.0, "asyncfeed ≥ 5× the classic design's rows/s"),
            ratio_target(summary, "SPDL", 10.0, "asyncfeed ≥ 10× SPDL's rows/s"),
        ]


WORKLOAD = Overhead(
    name="overhead",
    title="overhead: 1-row float32[16] chunks, batch 256, no I/O",
    description=(
        "Every fetch returns one row of float32[16]; batches of 256 rows. Measures what the "
        "pipeline itself costs per chunk."
    ),
    spec=RowSpec((16,), "float32", 1, 1),
    batch_size=256,
    concurrency=4,
    max_buffered_chunks=800,
    copy_bound=False,
)
