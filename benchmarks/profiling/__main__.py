"""``python -m benchmarks.profiling``: profiles of asyncfeed's costly paths, for the core.

Cases (default: all)::

    keyed        overhead workload, Feed.from_keys with an async fetch_one, 1-row chunks
    seed         overhead workload, seed-style Feed(async fetch), 1-row chunks
    rebatch      rebatch workload (1–200-row chunks of 48 KiB rows), seed-style
    http-inproc  http workload, same fetch, in-process, concurrency 64
    http-p2      http workload, same fetch, processes=2, concurrency 64

For each case: the run without a profiler (CPU µs per row, as ``make bench`` measures it);
``perf`` samples with Python frames (CPU µs per row by process, thread, library, Python
function and native function; a flame graph SVG; collapsed stacks), taken with
``--perf-python``, a CPython ≥ 3.13 with the runtime dependencies (asyncfeed's rows need no
torch); cProfile over the measured window on this interpreter (exact calls per row). The http
cases also decompose each key's time (``hop.py``) at concurrency 64 and 256, and the rebatch
case measures the rebatcher alone (``rebatcher.py``). Everything goes to ``--out``
(``benchmarks/results/profiles/``, git-ignored): ``report.md``, ``report.json``, and per
case ``<case>.svg``, ``<case>.folded`` (collapsed stacks), ``<case>.prof`` (pstats).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..harness import ROOT, run_one
from ..runner import Phases
from ..spec import RunSpec
from . import rebatcher
from .flame import write_svg
from .perf import perf_available, record

OUT = ROOT / "benchmarks" / "results" / "profiles"
CASES = ("keyed", "seed", "rebatch", "http-inproc", "http-p2")


def spec_for(case: str, phases: Phases, service: dict[str, Any]) -> RunSpec:
    if case == "keyed":
        return RunSpec("overhead", "asyncfeed", case, {"keyed": True, "mode": "async"}, phases)
    if case == "seed":
        return RunSpec("overhead", "asyncfeed", case, {"mode": "async"}, phases)
    if case == "rebatch":
        return RunSpec("rebatch", "asyncfeed", case, {"mode": "async"}, phases)
    params = {"concurrency": 64, "fetch": "same", "series": case, **service}
    if case == "http-p2":
        params["processes"] = 2
    return RunSpec("http", "asyncfeed", case, params, phases, group=64)


@contextlib.contextmanager
def service_for(cases: Sequence[str]) -> Iterator[dict[str, Any]]:
    if not any(c.startswith("http") for c in cases):
        yield {}
        return
    from ..workloads.http import WORKLOAD

    with WORKLOAD.session() as params:
        yield params


def cprofile(spec: RunSpec, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profiling.window", str(out), spec.to_json()],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    data: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    return data


def hop(
    service: dict[str, Any],
    c: int,
    processes: int | None,
    seconds: float,
    max_buffered_chunks: int | None = None,
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.profiling.hop", service["url_template"], str(c)]
    cmd += ["--service-pid", str(service["service_pid"]), "--seconds", str(seconds)]
    if processes:
        cmd += ["--processes", str(processes)]
    if max_buffered_chunks is not None:
        cmd += ["--max-buffered-chunks", str(max_buffered_chunks)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--window", type=float, default=4.0, help="measured seconds")
    parser.add_argument("--perf-python", default=None, help="CPython >= 3.13 for perf")
    parser.add_argument("--rate", type=int, default=499, help="perf samples per second")
    args = parser.parse_args(argv)
    for case in args.cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    cases = args.cases or list(CASES)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases(warmup=0.5, window=args.window)
    why_no_perf = perf_available() if args.perf_python else "no --perf-python given"
    report: dict[str, Any] = {"window_s": args.window, "perf": why_no_perf or args.perf_python}
    with service_for(cases) as service:
        for case in cases:
            spec = spec_for(case, phases, service)
            entry: dict[str, Any] = {"spec": spec.params | {"workload": spec.workload}}
            plain = run_one(spec, timeout=300)
            entry["plain"] = {
                k: plain.get(k) for k in ("status", "rows_per_s", "cpu_us_per_row", "peak_rss_mb")
            }
            print(f"[{case}] plain: {entry['plain']}", file=sys.stderr, flush=True)
            if why_no_perf is None:
                try:
                    result, profile = record(spec, args.perf_python, rate=args.rate)
                except RuntimeError as exc:
                    entry["perf"] = {"error": str(exc)}
                else:
                    folded = profile.collapsed()
                    (out / f"{case}.folded").write_text(
                        "".join(f"{k} {v}\n" for k, v in sorted(folded.items()))
                    )
                    title = (
                        f"{case}: {profile.us(len(profile.samples)):.2f} µs CPU per row "
                        f"({len(profile.samples)} samples at {args.rate} Hz, CPython 3.13, perf)"
                    )
                    write_svg(folded, out / f"{case}.svg", title)
                    entry["perf"] = {
                        "rows": profile.rows,
                        "rows_per_s": result["rows_per_s"],
                        "cpu_us_per_row_in_window": result["cpu_us_per_row"],
                        "us_per_row": profile.us(len(profile.samples)),
                        **{k: profile.table(k) for k in
                           ("process", "thread", "dso", "python_self", "python_total", "native")},
                        "thread_python_self": profile.per_thread(),
                    }  # fmt: skip
                print(f"[{case}] perf done", file=sys.stderr, flush=True)
            entry["cprofile"] = cprofile(spec, out / case)
            print(f"[{case}] cProfile done", file=sys.stderr, flush=True)
            if case.startswith("http"):
                procs = 2 if case == "http-p2" else None
                entry["hop"] = {str(c): hop(service, c, procs, args.window) for c in (64, 256)}
                # the chunk queue counts chunks: 800 one-image chunks are 157 MB
                entry["hop"]["256, max_buffered_chunks=64"] = hop(
                    service, 256, procs, args.window, max_buffered_chunks=64
                )
            if case == "rebatch":
                entry["rebatcher_alone"] = rebatcher.measure()
            report[case] = entry
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(render(report))
    print(f"wrote {out}/report.md", file=sys.stderr)
    return 0


def _rows(entries: list[dict[str, Any]], n: int) -> list[str]:
    return [
        f"| {e['us_per_row']:.3f} | {e['share_pct']:.1f} % | {e['name']} |" for e in entries[:n]
    ]


def render(report: dict[str, Any]) -> str:
    """The profiles as markdown."""
    lines = [
        "# asyncfeed profiles",
        "",
        f"perf: {report['perf']}; window {report['window_s']} s",
        "",
    ]
    for case in CASES:
        entry = report.get(case)
        if entry is None:
            continue
        lines += [f"## {case}", "", f"spec: `{entry['spec']}`", ""]
        plain = entry["plain"]
        lines.append(
            f"Without a profiler: {plain.get('rows_per_s') or 0:.0f} rows/s, "
            f"{plain.get('cpu_us_per_row') or 0:.2f} µs CPU/row, peak RSS "
            f"{plain.get('peak_rss_mb') or 0:.0f} MB."
        )
        perf = entry.get("perf")
        if perf and "error" not in perf:
            lines += [
                "",
                f"perf (CPython 3.13): {perf['us_per_row']:.2f} µs CPU/row sampled "
                f"({perf['rows_per_s']:.0f} rows/s under the profiler).",
            ]
            for key, title, n in (
                ("thread", "by process and thread", 8),
                ("dso", "by library (leaf)", 8),
                ("python_self", "by Python function (self: its code and the native code it "
                                "calls)", 25),
                ("python_total", "by asyncfeed function (total: with everything it calls)", 15),
                ("native", "by native function (leaf)", 12),
            ):  # fmt: skip
                lines += ["", f"{title}:", "", "| µs/row | share | name |", "|---|---|---|"]
                lines += _rows(perf[key], n)
            lines += ["", "by thread and Python function (self), top 12 per thread:"]
            for thread, entries in perf.get("thread_python_self", {}).items():
                lines += ["", f"{thread}:", "", "| µs/row | share | name |", "|---|---|---|"]
                lines += _rows(entries, 12)
        elif perf:
            lines += ["", f"perf failed: {perf['error'][:500]}"]
        prof = entry.get("cprofile", {})
        if "functions" in prof:
            lines += [
                "",
                f"cProfile over the window (CPython {sys.version.split()[0]}; times inflated "
                f"by the profiler: {prof['cpu_us_per_row_profiled']:.2f} µs CPU/row under it):",
                "",
                "| calls/row | own µs/row | cum µs/row | function |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {f['calls_per_row']:.2f} | {f['own_us_per_row']:.2f} | "
                f"{f['cum_us_per_row']:.2f} | {f['name']} |"
                for f in prof["functions"][:30]
            ]
        for c, h in (entry.get("hop") or {}).items():
            if "error" in h:
                lines += ["", f"per-key time at concurrency {c}: failed: {h['error'][:300]}"]
                continue
            lines += [
                "",
                f"Per-key time at concurrency {c} ({h['rows_per_s']:.0f} rows/s): slot "
                f"{h['slot_ms']:.1f} ms (C / rows/s) = fetch {h['fetch_ms']:.1f} ms (GET "
                f"{h['get_ms']['mean']:.1f} + decode incl. pool wait {h['decode_ms']['mean']:.1f})"
                f" + pipeline {h['pipeline_ms_per_key']:.1f} ms; batch → consumer after the last"
                f" decode {h['back_ms']['mean']:.1f} ms. CPU (cores): feed process "
                f"{h['cpu_feed_process']:.2f}, workers {h['cpu_workers']:.2f}, image service "
                f"{h['cpu_service'] or 0:.2f}. Peak RSS {h['peak_rss_mb']:.0f} MB; rows in "
                f"flight max {h['rows_in_flight_max']} (mean {h['rows_in_flight_mean']:.0f}), "
                f"queued max {h['rows_queued_max']}.",
            ]
        for r in entry.get("rebatcher_alone") or []:
            lines += [
                "",
                f"Rebatcher alone, {r['case']}: {100 * r['share_of_bound']:.0f} % of the copy "
                f"bound ({r['rebatcher_us_per_row']:.3f} vs {r['bound_us_per_row']:.3f} µs/row; "
                f"{r['extra_us_per_chunk']:.2f} µs extra per chunk of {r['rows_per_chunk']:.0f} "
                "rows)",
            ]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
