"""handoff: µs per batch from the feed's event loop, through the bridge thread, into a sink.

Uses the bridge's own measurement (``benchmarks.handoff.measure_handoff``, from the sinks
and bridge issue): batches already made are handed through ``asyncfeed.handoff.SinkBridge``
into a ``BlobsQueue`` or the torch CPU sink while a consumer thread drains it; the time per
batch is the handoff cost. The floor is the same batches put into a ``BlobsQueue`` by one
thread and read by another, with no event loop. Each measurement runs in a fresh process
like every other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Target, Workload
from .targets import median

__all__ = ["Handoff", "WORKLOAD"]

BATCH = 32
BATCHES = 4000
INNER_REPEATS = 3
TARGET_US = 50.0


def _measure_handoff() -> Callable[..., dict[str, float]]:
    try:
        module = importlib.import_module("benchmarks.handoff")
        importlib.import_module("asyncfeed.sinks")
    except ImportError as exc:
        raise Unavailable(f"not available yet: {exc}") from exc
    fn = getattr(module, "measure_handoff", None)
    if fn is None:
        raise Unavailable("not available yet: benchmarks.handoff has no measure_handoff()")
    return fn  # type: ignore[no-any-return]


class Handoff(Workload):
    name = "handoff"
    title = "device handoff: µs per batch through the bridge into a sink"
    description = (
        f"Batches of {BATCH} rows (float32[3,32,32] + int64 label) handed from the event loop "
        "through the bridge thread into the sink while a consumer thread drains it; "
        f"{BATCHES} batches per measurement, median of {INNER_REPEATS} inside each process. "
        "The floor hands the same batches thread to thread through a BlobsQueue, no loop."
    )
    table_kind = "latency"

    def available(self) -> str | None:
        try:
            _measure_handoff()
        except Unavailable as exc:
            return str(exc)
        return None

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        batches = BATCHES // 4 if quick else BATCHES

        def spec(label: str, sink: str, primary: bool = False) -> RunSpec:
            return RunSpec(
                self.name, "measure", label, {"sink": sink, "batches": batches}, phases, primary
            )

        return [
            spec("bridge → BlobsQueue", "blobs_queue", primary=True),
            spec("bridge → torch CPU sink", "torch_cpu"),
            spec("floor: BlobsQueue thread → thread, no loop", "direct"),
        ]

    def checker(self, spec: RunSpec) -> BatchChecker:
        raise Unavailable("the handoff workload measures with measure_handoff()")

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        raise Unavailable("the handoff workload measures with measure_handoff()")

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        measure_handoff = _measure_handoff()
        sink = spec.params["sink"]
        sinks = [] if sink == "direct" else [sink]
        if sink == "torch_cpu":
            try:
                import torch  # noqa: F401
            except ImportError as exc:
                raise Unavailable(f"torch does not import: {exc}") from exc
        results = measure_handoff(
            batches=spec.params["batches"],
            repeats=INNER_REPEATS,
            batch_size=BATCH,
            sinks=sinks,
        )
        key = "direct_blobs_queue" if sink == "direct" else sink
        us = results[f"{key}_us_per_batch"]
        return {
            "us_per_batch": us,
            "batches_per_s": 1e6 / us,
            "rows_per_s": BATCH * 1e6 / us,
        }

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        out = []
        for row in summary.values():
            if row["label"].startswith("bridge"):
                us = median(row, "us_per_batch")
                text = f"{row['label']}: ≤ {TARGET_US:.0f} µs per batch (median)"
                if us is None:
                    out.append(Target(text, None, "not measured"))
                else:
                    out.append(Target(text, us <= TARGET_US, f"{us:.1f} µs"))
        return out


WORKLOAD = Handoff()
