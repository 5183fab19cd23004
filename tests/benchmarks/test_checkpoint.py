"""The checkpoint workload: ``state_dict()`` timed behind a full pipeline, at the depth the
rows claim, with its table and targets."""

# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import workloads
from benchmarks.harness import Record, summarise
from benchmarks.report import Section, markdown
from benchmarks.runner import Phases
from benchmarks.spec import RunSpec
from benchmarks.worker import execute
from benchmarks.workloads import checkpoint

TINY = Phases(warmup=0.02, window=0.05, idle=0.05, drain_timeout=1.0, first_batch_timeout=10.0)


def test_the_workload_is_listed_with_its_configurations() -> None:
    assert "checkpoint" in workloads.NAMES
    wl = workloads.get("checkpoint")
    specs = wl.specs(TINY, quick=True)
    assert [s.primary for s in specs] == [True] + [False] * (len(specs) - 1)
    assert {s.pipeline for s in specs} == {"measure"}
    long = [s for s in specs if s.params.get("taken") == checkpoint.LONG_TAKEN]
    assert len(long) == 1 and long[0].params["calls"] == checkpoint.CALLS // 40
    assert all(s.params["calls"] == checkpoint.CALLS // 4 for s in specs if s not in long)
    shuffled = [s for s in specs if s.params.get("shuffle")]
    assert len(shuffled) == 1 and shuffled[0].params["epochs"] == 2
    assert wl.table_kind == "latency"


@pytest.mark.parametrize(
    "params",
    [{}, {"slow_every": 16}, {"slow_every": 16, "shuffle": True, "epochs": 2}],
    ids=["in-order", "out-of-order", "shuffled"],
)
def test_state_dict_is_timed_with_the_pipeline_full(params: dict[str, Any]) -> None:
    spec = RunSpec("checkpoint", "measure", "c", {"calls": 20, **params}, TINY)
    result = execute(spec)
    assert result["status"] == "ok", result
    assert result["chunks_queued"] == checkpoint.CHUNKS
    assert result["fetches_in_flight"] == checkpoint.CONCURRENCY
    assert result["batches_queued"] == 2  # prefetch_batches, full
    assert result["batches_received"] == checkpoint.TAKEN
    assert 0 < result["state_dict_us"] <= result["state_dict_p99_us"]
    assert 0 < result["json_us"] <= result["json_p99_us"]
    assert result["state_bytes"] > 0 and result["calls"] == 20
    if params.get("slow_every"):  # keys received above missing ones
        assert result["consumed_keys"] > 0
    assert result["epoch"] == (1 if params.get("epochs") else 0)
    assert "800 chunks queued, 256 calls in flight" in result["note"]


def test_the_same_state_in_every_run() -> None:
    """No clock decides the completion order: repetitions compare like with like."""
    spec = RunSpec("checkpoint", "measure", "c", {"calls": 5, "slow_every": 16}, TINY)
    first, second = execute(spec), execute(spec)
    for key in ("state_bytes", "consumed_keys", "watermark"):
        assert first[key] == second[key]


def row(label: str, us: float, primary: bool = False) -> Record:
    spec = RunSpec("checkpoint", "measure", label, {}, TINY, primary)
    result = {
        "status": "ok",
        "state_dict_us": us,
        "state_dict_p99_us": 2 * us,
        "json_us": 3 * us,
        "json_p99_us": 4 * us,
        "state_bytes": 1000,
        "consumed_keys": 10,
    }
    return Record(spec, 0, result)


def test_targets_and_table() -> None:
    wl = workloads.get("checkpoint")
    summary = summarise([row("a", 80.0, True), row("b", 120.0)])["checkpoint"]
    target, p99, dumps = wl.targets(summary)
    assert target.met is True and "a: 80 µs; b: 120 µs" in target.detail
    assert p99.info and "b: 240 µs" in p99.detail
    assert dumps.info and "a: 240 µs" in dumps.detail
    slow = summarise([row("a", 80.0, True), row("b", 1500.0)])["checkpoint"]
    assert wl.targets(slow)[0].met is False
    assert wl.targets({})[0].met is None
    section = Section(wl.title, "", summary, kind="latency", columns=wl.latency_columns)
    text = markdown({"date": "d", "machine": "m", "python": "p", "reps": 1, "warmup_s": 0,
                     "window_s": 0}, [section])  # fmt: skip
    assert "| state_dict() µs median (min–max) | p99 µs |" in text
    assert "| **a** | 80.0 | 160 | 240 | 320 | 1.00k | 10.0 |" in text
