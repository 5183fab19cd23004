"""Runs every measurement in a fresh process, interleaved, and summarises the repetitions.

For each workload the configurations run as A B C … A B C … over ``reps`` repetitions, each
in its own ``python -m benchmarks.worker`` process. While a measurement runs, this process
samples the RSS and PSS of the worker's whole process tree (``psutil``; PSS from
``memory_full_info`` where the platform has it) from outside, so sampling steals nothing from
the measured pipeline's interpreter. A summary gives the median with min and max of every
metric over the repetitions that succeeded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .spec import RunSpec

__all__ = ["Record", "TreeSampler", "run_one", "run_suite", "summarise"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.05
METRICS = (
    "rows_per_s",
    "batches_per_s",
    "cpu_us_per_row",
    "cpu_util",
    "peak_rss_mb",
    "peak_pss_mb",
    "first_batch_s",
    "stop_s",
    "bytes_per_s",
    "us_per_batch",
    "service_cpu_us_per_row",
    "driver_cpu_us_per_row",
    "round_trip_ms",
    "single_thread_rows_per_s",
    "bound_with_server_rows_per_s",
    "state_dict_us",
    "state_dict_p99_us",
    "json_us",
    "json_p99_us",
    "state_bytes",
    "consumed_keys",
)


class TreeSampler:
    """Peak summed RSS and PSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)
        self.peak_rss = 0
        self.peak_pss = 0
        self.pss_available = True
        self.seen: dict[int, psutil.Process] = {}

    def sample(self) -> None:
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs[1:]:
            self.seen.setdefault(p.pid, p)
        rss = pss = 0
        for p in procs:
            try:
                if self.pss_available:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", 0)
                    if not hasattr(info, "pss"):
                        self.pss_available = False
                else:
                    rss += p.memory_info().rss
            except psutil.AccessDenied:
                self.pss_available = False
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)


def _kill_leftovers(procs: Iterable[psutil.Process], grace: float = 2.0) -> list[str]:
    """Descendants that outlived the worker (orphans are no longer in its tree): give them
    ``grace`` seconds to end on their own (a resource tracker does), then kill the rest.

    Returns the names of those that had to be killed.
    """
    running = []
    for p in procs:
        try:
            if p.is_running():
                running.append(p)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(running, timeout=grace)
    names = []
    for p in alive:
        try:
            names.append(p.name())
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    return names


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def run_one(spec: RunSpec, *, timeout: float, python: str = sys.executable) -> dict[str, Any]:
    """Run ``spec`` in a fresh worker process; return its result with memory peaks added."""
    with tempfile.TemporaryDirectory(prefix="asyncfeed-bench-") as tmp:
        result_path = Path(tmp, "result.json")
        log_path = Path(tmp, "log.txt")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # nothing measured uses BLAS; idle spins
        cmd = [python, "-m", "benchmarks.worker", "--result", str(result_path), spec.to_json()]
        started = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        sampler = TreeSampler(proc.pid)
        timed_out = False
        while True:
            sampler.sample()
            try:
                proc.wait(timeout=SAMPLE_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - started > timeout:
                timed_out = True
                _kill_tree(proc.pid)
                proc.wait()
                break
        wall = time.monotonic() - started
        leftovers = _kill_leftovers(sampler.seen.values())
        log_tail = log_path.read_text(errors="replace")[-4000:]
        if result_path.exists():
            result: dict[str, Any] = json.loads(result_path.read_text())
        elif timed_out:
            result = {"status": "timeout", "reason": f"no result within {timeout:.0f} s"}
        else:
            result = {"status": "error", "reason": f"worker exited {proc.returncode}"}
        if result["status"] == "error" or timed_out or proc.returncode:
            result["log"] = log_tail
    result["wall_s"] = wall
    if leftovers:
        result["leftover_processes"] = len(leftovers)
        result["leftover_names"] = leftovers
    mb = 1 / (1 << 20)
    result["peak_rss_mb"] = max(sampler.peak_rss * mb, result.get("self_maxrss_mb", 0.0))
    result["peak_pss_mb"] = sampler.peak_pss * mb if sampler.pss_available else None
    return result


@dataclass
class Record:
    """One repetition of one configuration."""

    spec: RunSpec
    rep: int
    result: dict[str, Any]


def run_suite(
    specs: Sequence[RunSpec],
    *,
    reps: int,
    timeout: float,
    progress: Callable[[Record, int, int], None] | None = None,
    runner: Callable[[RunSpec], dict[str, Any]] | None = None,
) -> list[Record]:
    """Run ``specs`` interleaved (A B C A B C …) ``reps`` times, each in a fresh process.

    A configuration reported unavailable is not tried again.
    """
    run = runner or (lambda s: run_one(s, timeout=timeout))
    records: list[Record] = []
    skip: set[str] = set()
    total = reps * len(specs)
    done = 0
    for rep in range(reps):
        for spec in specs:
            done += 1
            if spec.key in skip:
                continue
            record = Record(spec, rep, run(spec))
            if record.result["status"] == "unavailable":
                skip.add(spec.key)
            records.append(record)
            if progress is not None:
                progress(record, done, total)
    return records


def _stats(values: Iterable[float | None]) -> dict[str, float] | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def summarise(records: Sequence[Record]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload, per configuration label: medians with min–max, and the row accounting.

    A configuration's status is ``ok`` when at least one repetition succeeded; otherwise the
    status and reason of its last repetition.
    """
    by_key: dict[str, list[Record]] = {}
    for rec in records:
        by_key.setdefault(rec.spec.key, []).append(rec)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for recs in by_key.values():
        spec = recs[0].spec
        ok = [r.result for r in recs if r.result["status"] == "ok"]
        failed = [r.result for r in recs if r.result["status"] != "ok"]
        row: dict[str, Any] = {
            "label": spec.label,
            "pipeline": spec.pipeline,
            "params": spec.params,
            "primary": spec.primary,
            "group": spec.group,
            "reps": len(ok),
            "failed_reps": len(failed),
            "status": "ok" if ok else failed[-1]["status"],
            "reason": None if ok else failed[-1].get("reason"),
            "note": next((r.get("note") for r in ok if r.get("note")), ""),
        }
        leftovers = sum(r.result.get("leftover_processes", 0) for r in recs)
        if leftovers:
            row["note"] = f"{row['note']}; {leftovers} processes outlived their run (killed)"
        if failed and ok:
            row["reason"] = f"{len(failed)} of {len(recs)} runs failed: {failed[-1].get('reason')}"
        for metric in METRICS:
            row[metric] = _stats(r.get(metric) for r in ok)
        extras = {
            key
            for r in ok
            for key, value in r.get("extras", {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if extras:  # the runners' own figures, summarised like the metrics
            row["extras"] = {k: _stats(r.get("extras", {}).get(k) for r in ok) for k in extras}
        accs = [r["accounting"] for r in ok if "accounting" in r]
        if accs:
            lost_pct = [100 * a["lost"] / a["produced"] if a["produced"] else 0.0 for a in accs]
            row["accounting"] = {
                "lost_pct": _stats(lost_pct),
                "lost_total": sum(a["lost"] for a in accs),
                "produced_total": sum(a["produced"] for a in accs),
                "duplicates": sum(a["duplicates"] for a in accs),
                "bad_batches": sum(a["bad_batches"] for a in accs),
                "corrupt_rows": sum(a["corrupt_rows"] for a in accs),
                "held_unknown": sum(1 for a in accs if not a["held_known"]),
                "first_error": next((a["first_error"] for a in accs if a["first_error"]), None),
            }
        out.setdefault(spec.workload, {})[spec.label] = row
    return out
