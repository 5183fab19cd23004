"""The throttled workload: HttpFetcher against a service that serves K at once, Adaptive()
against fixed concurrency, with the 429s counted and judged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import workloads
from benchmarks.harness import Record, summarise
from benchmarks.runner import Phases
from benchmarks.spec import RunSpec
from benchmarks.worker import execute
from benchmarks.workloads import throttled

TINY = Phases(warmup=0.05, window=0.5, idle=0.1, drain_timeout=5.0, first_batch_timeout=30.0)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def service() -> Iterator[dict[str, Any]]:
    """The throttled image service, in a process of its own."""
    with throttled.WORKLOAD.session() as params:
        yield params


def test_adaptive_and_each_fixed_concurrency_are_rows() -> None:
    assert "throttled" in workloads.NAMES
    specs = throttled.WORKLOAD.specs(Phases(), quick=False)
    assert [s.label for s in specs] == [throttled.ADAPTIVE] + [
        f"HttpFetcher concurrency={c}" for c in throttled.FIXED
    ]
    assert [s.primary for s in specs] == [True, False, False, False]
    assert all(s.phases.window >= throttled.WINDOW_S for s in specs)  # convergence takes time
    quick = throttled.WORKLOAD.specs(Phases(window=0.2), quick=True)
    assert all(s.phases.window == 0.2 for s in quick)


@pytest.mark.slow
@pytest.mark.parametrize("params", [{"adaptive": True, "concurrency": 0}, {"concurrency": 64}])
def test_a_run_counts_the_services_refusals(
    service: dict[str, Any], params: dict[str, Any]
) -> None:
    spec = RunSpec("throttled", "asyncfeed", "x", {**service, **params}, TINY)
    result = execute(spec)
    assert result["status"] == "ok", result
    assert result["rows_per_s"] > 0
    acc = result["accounting"]
    assert acc["duplicates"] == acc["bad_batches"] == acc["corrupt_rows"] == 0
    extras = result["extras"]
    assert extras["requests"] >= extras["refused"] >= 0
    if params.get("adaptive"):
        assert 1 <= extras["host_limit"] <= 512
    else:  # 64 at once against 32: refused from the first burst; no host limit to report
        assert extras["refused"] > 0 and "host_limit" not in extras
    assert acc["lost"] == 0  # the drain waits for requests in backoff


def record(label: str, rate: float, refused: int, requests: int, primary: bool = False) -> Record:
    params = {"adaptive": True} if primary else {}
    spec = RunSpec("throttled", "asyncfeed", label, params, TINY, primary)
    extras = {"requests": requests, "refused": refused, "host_limit": 31, "flag": True}
    return Record(spec, 0, {"status": "ok", "rows_per_s": rate, "extras": extras})


def judged(adaptive_rate: float, adaptive_refused: int) -> dict[str, Any]:
    records = [
        record(throttled.ADAPTIVE, adaptive_rate, adaptive_refused, 10_000, primary=True),
        record("HttpFetcher concurrency=32", 1000.0, 0, 10_000),
        record("HttpFetcher concurrency=256", 990.0, 2000, 12_000),
    ]
    summary = summarise(records)["throttled"]
    assert "flag" not in summary[throttled.ADAPTIVE]["extras"]  # numbers only
    targets = throttled.WORKLOAD.targets(summary)
    table = throttled.WORKLOAD.decorate(summary)
    return {"targets": targets, "table": table}


def test_targets_compare_with_the_best_fixed_row_and_count_refusals() -> None:
    met = judged(950.0, 50)
    rate, refusals = met["targets"][:2]
    assert rate.met and "concurrency=32" in rate.detail and "95%" in rate.detail
    assert refusals.met and "0.50%" in refusals.detail
    assert "429s 2000 (16.67% of requests)" in met["table"]["HttpFetcher concurrency=256"]["note"]
    assert "host limit at the end 31" in met["table"][throttled.ADAPTIVE]["note"]
    missed = judged(850.0, 300)
    assert missed["targets"][0].met is False and missed["targets"][1].met is False
