"""``python -m benchmarks``: run the suite, print the tables, write them to ``results/``.

Examples::

    python -m benchmarks                      # every workload, 3 repetitions (make bench)
    python -m benchmarks --quick              # smoke run: short windows, 1 repetition
    python -m benchmarks overhead rebatch --reps 5 --json out.json
    python -m benchmarks --update-results     # also replace the committed results/latest.*

Every run writes ``results.md``, ``results.json`` and ``http.png`` into a folder of its own,
``results/runs/<timestamp>/`` (git-ignored). Only ``--update-results`` copies them over the
committed ``results/latest.md``, ``latest.json`` and ``http.png``; a ``--quick`` run never
does.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import workloads
from .harness import Record, run_suite, summarise
from .report import Section, fmt_num, load_average, markdown, update_committed, write_run
from .runner import Phases

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "runs"
PACKAGES = ("asyncfeed", "numpy", "aiohttp", "torch", "torchdata", "spdl", "psutil")


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _meta(
    args: argparse.Namespace, phases: Phases, start_load: tuple[float, ...] | None
) -> dict[str, Any]:
    load = "" if start_load is None else ", ".join(f"{x:.2f}" for x in start_load)
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "reps": args.reps,
        "warmup_s": phases.warmup,
        "window_s": phases.window,
        "quick": args.quick,
        "versions": _versions(),
        "load": load,
    }


def _progress(record: Record, done: int, total: int) -> None:
    res = record.result
    if res["status"] == "ok":
        what = f"{fmt_num(res.get('rows_per_s'))} rows/s"
        acc = res.get("accounting")
        if acc and acc["lost"]:
            what += f", {fmt_num(acc['lost'])} rows lost"
        if acc and (acc["duplicates"] or acc["bad_batches"]):
            what += f", {acc['duplicates']} dup, {acc['bad_batches']} bad batches"
    else:
        what = f"{res['status']}: {str(res.get('reason', ''))[:120]}"
    print(
        f"[{record.spec.workload} {done}/{total}] {record.spec.label}: {what} "
        f"({res.get('wall_s', 0):.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="asyncfeed against the classic design and peers"
    )
    parser.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"workloads to run (default: all of {', '.join(workloads.NAMES)})",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, 1 rep")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (3)")
    parser.add_argument("--window", type=float, default=None, help="measured seconds (2.0)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds (0.5)")
    parser.add_argument("--only", default=None, help="only configurations whose label has this")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--out", type=Path, default=RUNS, help="where run folders go (results/runs)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="also copy the run over the committed results/latest.md, latest.json, http.png",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per-run limit, seconds")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = parser.parse_args(argv)
    for name in args.workloads:
        if name not in workloads.NAMES:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(workloads.NAMES)}")
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.update_results and args.quick:
        parser.error(
            "--update-results cannot be used with --quick: smoke runs never replace "
            "the committed results"
        )
    if args.update_results and args.no_write:
        parser.error("--update-results cannot be used with --no-write")
    return args


def phases_for(args: argparse.Namespace) -> Phases:
    base = Phases(warmup=0.2, window=0.6, idle=0.2, drain_timeout=3.0) if args.quick else Phases()
    return Phases(
        warmup=base.warmup if args.warmup is None else args.warmup,
        window=base.window if args.window is None else args.window,
        first_batch_timeout=base.first_batch_timeout,
        idle=base.idle,
        drain_timeout=base.drain_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start_load = load_average()
    phases = phases_for(args)
    names = args.workloads or list(workloads.NAMES)
    sections: list[Section] = []
    summaries: dict[str, Any] = {}
    loads: dict[str, dict[str, Any]] = {}
    all_records: list[Record] = []
    for name in names:
        wl = workloads.get(name)
        why_not = wl.available()
        specs = [] if why_not else wl.specs(phases, quick=args.quick)
        if args.only:
            specs = [s for s in specs if args.only in s.label or s.primary]
        if args.list:
            print(f"{name}: " + (why_not or ""))
            for s in specs:
                print(f"  {s.label}  [{s.pipeline} {s.params}]")
            continue
        if why_not:
            print(f"[{name}] not available: {why_not}", file=sys.stderr)
            sections.append(Section(wl.title, wl.description, None, why_not=why_not))
            continue
        before = load_average()
        try:
            with wl.session() as shared:
                specs = [dataclasses.replace(s, params={**s.params, **shared}) for s in specs]
                records = run_suite(specs, reps=args.reps, timeout=args.timeout, progress=_progress)
        except Exception as exc:  # a workload's set-up failed: report it, run the others
            why = f"set-up failed: {type(exc).__name__}: {exc}"
            print(f"[{name}] {why}", file=sys.stderr)
            sections.append(Section(wl.title, wl.description, None, why_not=why))
            continue
        after = load_average()
        all_records += records
        summary = wl.decorate(summarise(records).get(name, {}))
        summaries[name] = summary
        loads[name] = {"before": before, "after": after}
        sections.append(
            Section(
                wl.title,
                wl.description,
                summary,
                wl.targets(summary),
                kind=wl.table_kind,
                load_before=before,
                load_after=after,
                columns=wl.latency_columns,
            )
        )
    if args.list:
        return 0
    meta = _meta(args, phases, start_load)
    text = markdown(meta, sections)
    print(text)
    data = {
        "meta": meta,
        "load_average": loads,
        "summary": summaries,
        "records": [
            {"workload": r.spec.workload, "label": r.spec.label, "rep": r.rep, "result": r.result}
            for r in all_records
        ],
    }
    if not args.no_write:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = args.out / (f"{stamp}-quick" if args.quick else stamp)
        written = write_run(run_dir, text, data, summaries.get("http"))
        if args.update_results:
            written += update_committed(run_dir, RESULTS)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
