"""overhead: 1-row float32[16] chunks, batch 256 — the pipeline's cost per chunk and row."""

from __future__ import annotations

from typing import Any

from ..ablations import variant_label
from ..data import RowSpec
from .base import Target
from .synthetic import SyntheticWorkload
from .targets import bound_target, cost_target, labelled, ratio_target

KEYED = "asyncfeed from_keys"


class Overhead(SyntheticWorkload):
    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        keyed = labelled(summary, KEYED)
        return [
            ratio_target(
                summary,
                "classic",
                6.0,
                "asyncfeed seed-style (async fetch) ≥ 6× the classic design",
            ),
            ratio_target(
                summary,
                "classic",
                3.0,
                "asyncfeed from_keys (async fetch_one) ≥ 3× the classic design",
                keyed,
            ),
            ratio_target(summary, "SPDL", 10.0, "asyncfeed ≥ 10× SPDL's rows/s"),
            bound_target(
                summary,
                "bound",
                1.0,
                "asyncfeed seed-style: share of the single-thread fetch + copy bound",
                info=True,
            ),
            bound_target(
                summary,
                "bound",
                1.0,
                "asyncfeed from_keys: share of the single-thread fetch + copy bound",
                keyed,
                info=True,
            ),
            *self.cost_targets(summary),
        ]

    def cost_targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        """Provenance, attribution and metrics scraping: each row against its variant."""
        seed, keyed = self.seed_label, self.keyed_label
        return [
            cost_target(
                summary,
                keyed,
                variant_label(keyed, "provenance"),
                3.0,
                "provenance costs < 3 % (from_keys vs from_keys with provenance off)",
            ),
            *(
                cost_target(
                    summary,
                    row,
                    variant_label(row, "attribution"),
                    2.0,
                    f"attribution costs < 2 % ({what}: default vs attribution off)",
                )
                for row, what in ((seed, "seed-style"), (keyed, "from_keys"))
            ),
            *(
                cost_target(
                    summary,
                    variant_label(row, "metrics"),
                    row,
                    2.0,
                    f"metrics scraping costs < 2 % ({what}: scraped every 1 s vs default)",
                )
                for row, what in ((seed, "seed-style"), (keyed, "from_keys"))
            ),
        ]


WORKLOAD = Overhead(
    name="overhead",
    title="overhead: 1-row float32[16] chunks, batch 256, no I/O",
    description=(
        "Every fetch returns one row of float32[16]; batches of 256 rows. Measures what the "
        "pipeline itself costs per chunk. Seed-style: `Feed(async fetch)`; keyed: "
        "`Feed.from_keys(endless keys, async fetch_one)`, one chunk per key. The bound "
        "calls the same fetch and copies each chunk into batch buffers with np.copyto on one "
        "thread. Ablations (benchmarks/ablations.py, patched in the measuring process): "
        "provenance off (from_keys), attribution off; *metrics on*: the feed exported with "
        "asyncfeed.metrics.serve and scraped over HTTP once a second."
    ),
    spec=RowSpec((16,), "float32", 1, 1),
    batch_size=256,
    concurrency=4,
    max_buffered_chunks=800,
    copy_bound=False,
    seed_variants=("attribution", "metrics"),
    keyed_variants=("provenance", "attribution", "metrics"),
)
