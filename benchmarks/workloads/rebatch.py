"""rebatch: 1–200-row float32[3,64,64] chunks, batch 128, against a plain ``np.copyto`` bound."""

from __future__ import annotations

from typing import Any

from ..ablations import variant_label
from ..data import RowSpec
from .base import Target
from .synthetic import SyntheticWorkload
from .targets import bound_target, cost_target, labelled, lossless_target

COPY = "bound: single-thread np.copyto"


class Rebatch(SyntheticWorkload):
    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        keyed = labelled(summary, "asyncfeed from_keys")
        return [
            bound_target(summary, COPY, 0.85, "asyncfeed ≥ 85 % of the copy bound's rows/s"),
            lossless_target(summary, "asyncfeed loses no row"),
            bound_target(
                summary,
                COPY,
                0.85,
                "asyncfeed from_keys (async fetch_one): share of the copy bound",
                keyed,
                info=True,
            ),
            lossless_target(summary, "asyncfeed from_keys loses no row", keyed),
            bound_target(
                summary,
                "bound: single-thread fetch",
                1.0,
                "asyncfeed: share of the fetch + copy bound (the fetch allocates every chunk)",
                info=True,
            ),
            cost_target(
                summary,
                self.keyed_label,
                variant_label(self.keyed_label, "provenance"),
                3.0,
                "provenance costs < 3 % (from_keys vs from_keys with provenance off)",
            ),
        ]


WORKLOAD = Rebatch(
    name="rebatch",
    title="rebatch: 1–200-row float32[3,64,64] chunks, batch 128",
    description=(
        "Every fetch returns 1–200 rows of float32[3,64,64] (48 KiB a row); batches of 128 "
        "rows. Seed-style: `Feed(async fetch)`; keyed: `Feed.from_keys(endless keys, async "
        "fetch_one)`. The copy bound copies chunks made beforehand into batch buffers with "
        "np.copyto on one thread; the fetch + copy bound also calls the fetch, which "
        "allocates every chunk. Queues hold at most 32 chunks. Ablation: from_keys with "
        "provenance off (benchmarks/ablations.py, patched in the measuring process)."
    ),
    spec=RowSpec((3, 64, 64), "float32", 1, 200),
    batch_size=128,
    concurrency=4,
    max_buffered_chunks=32,
    copy_bound=True,
    keyed_variants=("provenance",),
)
