"""Ablations and the metrics variant: in force while a run lasts, visible in its result, and
undone afterwards, so that an ablation cannot silently become a no-op."""

# ruff: noqa: RUF001

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed import attribution, checkpoint, handoff, run
from benchmarks import ablations
from benchmarks.harness import Record, summarise
from benchmarks.runner import Phases
from benchmarks.spec import RunSpec
from benchmarks.worker import execute
from benchmarks.workloads import http, overhead, rebatch
from benchmarks.workloads.targets import cost_target

TINY = Phases(warmup=0.02, window=0.05, idle=0.05, drain_timeout=1.0, first_batch_timeout=10.0)


def keyed_feed() -> af.Feed:
    row = np.zeros((1, 4), np.float32)

    async def fetch_one(key: int) -> list[np.ndarray]:
        return [row]

    return af.Feed.from_keys(
        itertools.count(), fetch_one, blobs=["x"], batch_size=8, concurrency=2, log_interval=None
    )


async def first_batches(feed: af.Feed, n: int = 3) -> list[af.Batch]:
    out = []
    async with feed:
        async for batch in feed:
            out.append(batch)
            if len(out) == n:
                break
    return out


async def test_provenance_off_makes_batches_without_provenance() -> None:
    with ablations.applied("provenance"):
        feed = keyed_feed()
        batches = await first_batches(feed)
        assert all(b.provenance is None for b in batches)
        assert feed.state_dict()["delivered"]["batches"] == 0  # the tracker received nothing
    feed = keyed_feed()  # undone: the next feed tracks again
    batches = await first_batches(feed)
    assert all(b.provenance for b in batches)
    assert feed.state_dict()["delivered"]["batches"] == 3


async def test_attribution_off_records_no_wait() -> None:
    with ablations.applied("attribution"):
        feed = keyed_feed()
        await first_batches(feed)
        stats = feed.stats()
        assert stats.consumer_waits == 0 and stats.consumer_wait_s == 0.0
        assert sum(stats.backpressure_s_by_stage.values()) == 0.0
    feed = keyed_feed()
    await first_batches(feed)
    assert feed.stats().consumer_waits >= 1  # the first batch is always waited for


def test_patches_are_undone_even_on_error() -> None:
    names = vars(run)
    before = (names["Rebatcher"], handoff.Receipts, checkpoint.Tracker.received)
    with pytest.raises(RuntimeError), ablations.applied("provenance"):
        assert names["Rebatcher"] is not before[0]
        raise RuntimeError
    assert (names["Rebatcher"], handoff.Receipts, checkpoint.Tracker.received) == before
    asked = attribution.Waits.asked
    with ablations.applied("attribution"):
        assert attribution.Waits.asked is not asked
    assert attribution.Waits.asked is asked


def keyed(**params: Any) -> dict[str, Any]:
    result = execute(RunSpec("overhead", "asyncfeed", "k", {"keyed": True, **params}, TINY))
    assert result["status"] == "ok", result
    acc = result["accounting"]
    assert acc["lost"] == 0 and acc["duplicates"] == 0 and acc["bad_batches"] == 0
    extras: dict[str, Any] = result["extras"]
    assert extras["batches"] > 0
    return extras


def test_a_run_with_provenance_off_had_none() -> None:
    default = keyed()
    assert default["batches_with_provenance"] == default["batches"]
    assert default["checkpoint_batches"] == default["batches"]
    ablated = keyed(ablate="provenance")
    assert ablated["ablation"] == "provenance"
    assert ablated["batches_with_provenance"] == 0 and ablated["checkpoint_batches"] == 0


@pytest.mark.parametrize("keyed_feed", [False, True], ids=["seed", "keyed"])
def test_a_run_with_attribution_off_recorded_no_wait(keyed_feed: bool) -> None:
    params: dict[str, Any] = {"mode": "async", "keyed": keyed_feed}
    spec = RunSpec("overhead", "asyncfeed", "a", params, TINY)
    default = execute(spec)
    assert default["status"] == "ok", default
    assert default["extras"]["consumer_waits"] >= 1
    ablated = execute(ablations.variant_of(spec, "attribution"))
    assert ablated["status"] == "ok", ablated
    assert ablated["extras"]["ablation"] == "attribution"
    assert ablated["extras"]["consumer_waits"] == 0
    assert ablated["extras"]["backpressure_s"] == 0.0


def test_a_metrics_run_was_scraped_and_exported_its_feed() -> None:
    spec = RunSpec("overhead", "asyncfeed", "m", {"keyed": True, "metrics": "scraped"}, TINY)
    result = execute(spec)
    assert result["status"] == "ok", result
    extras = result["extras"]
    assert extras["metrics"] is True and extras["metrics_scrapes"] >= 1
    assert extras["metrics_errors"] == 0 and extras["metrics_exported"]
    assert "scraped every 1 s" in result["note"]


def test_variant_rows_follow_their_rows() -> None:
    labels = [s.label for s in overhead.WORKLOAD.specs(TINY, quick=True)]
    seed, keyed_label = overhead.WORKLOAD.seed_label, overhead.WORKLOAD.keyed_label
    assert labels[:7] == [
        seed,
        ablations.variant_label(seed, "attribution"),
        ablations.variant_label(seed, "metrics"),
        keyed_label,
        ablations.variant_label(keyed_label, "provenance"),
        ablations.variant_label(keyed_label, "attribution"),
        ablations.variant_label(keyed_label, "metrics"),
    ]
    labels = [s.label for s in rebatch.WORKLOAD.specs(TINY, quick=True)]
    assert ablations.variant_label(rebatch.WORKLOAD.keyed_label, "provenance") in labels
    specs = http.WORKLOAD.specs(TINY, quick=True)
    varied = [s for s in specs if ablations.is_variant(s.params)]
    assert [(s.group, s.params.get("ablate"), s.params.get("metrics")) for s in varied] == [
        (64, "attribution", None),
        (64, None, "scraped"),
    ]
    assert not any(s.primary for s in varied)


def record(label: str, rate: float, cpu: float, **params: Any) -> Record:
    spec = RunSpec("overhead", "asyncfeed", label, params, TINY)
    return Record(spec, 0, {"status": "ok", "rows_per_s": rate, "cpu_us_per_row": cpu})


def test_cost_target() -> None:
    summary = summarise([record("on", 98.0, 1.01), record("off", 100.0, 1.0)])["overhead"]
    met = cost_target(summary, "on", "off", 3.0, "t")
    assert met.met is True and "rows/s +2.0 %" in met.detail and "CPU µs/row +1.0 %" in met.detail
    assert cost_target(summary, "on", "off", 1.5, "t").met is False
    assert cost_target(summary, "off", "on", 1.0, "t").met is True  # in its favour
    assert cost_target(summary, "on", "missing", 3.0, "t").met is None


def test_http_targets_leave_variant_rows_out() -> None:
    """A variant row is never taken for asyncfeed's best same-fetch row."""

    def rec(label: str, rate: float, **params: Any) -> Record:
        params = {"fetch": "same", "series": label, **params}
        spec = RunSpec("http", "asyncfeed", f"{label} @ 64", params, TINY, group=64)
        return Record(spec, 0, {"status": "ok", "rows_per_s": rate, "cpu_us_per_row": 1.0})

    peer = Record(
        RunSpec("http", "spdl", "spdl @ 64", {"fetch": "same"}, TINY, group=64),
        0,
        {"status": "ok", "rows_per_s": 100.0, "cpu_us_per_row": 1.0},
    )
    summary = summarise(
        [rec(http.SAME, 120.0), rec("fast variant", 1000.0, ablate="attribution"), peer]
    )["http"]
    target = next(t for t in http.http_targets(summary) if "concurrency 64" in t.text)
    assert target.met is False and "1.20×" in target.detail
