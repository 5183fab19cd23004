"""cProfile over the measured window only: exact calls per row on the benchmark's Python.

``python -m benchmarks.profiling.window OUT SPEC_JSON`` runs the spec in this process (as
``benchmarks.worker`` does), with the profiler on from the window's first batch to its
last, and writes ``OUT.prof`` (pstats) and ``OUT.json``: per function, calls per row and
cProfile's own and cumulative µs per row. cProfile adds a fixed cost to every Python call,
so its times overstate small, frequent functions; the calls per row are exact. It profiles
the thread that opens the window: the event loop's thread for ``async for`` runners.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
from pathlib import Path
from typing import Any

from ..runner import Timeline
from ..spec import RunSpec
from ..worker import execute
from .perf import short_path

__all__ = ["main", "profile_window"]


def profile_window(spec: RunSpec) -> tuple[dict[str, Any], cProfile.Profile]:
    """Run ``spec`` here with cProfile on during the window; its result and the profiler."""
    prof = cProfile.Profile()
    opened, closed = Timeline._open_window, Timeline._close_window

    def open_window(self: Timeline, now: float) -> None:
        opened(self, now)
        prof.enable()

    def close_window(self: Timeline, now: float) -> None:
        prof.disable()
        closed(self, now)

    Timeline._open_window = open_window  # type: ignore[method-assign]
    Timeline._close_window = close_window  # type: ignore[method-assign]
    try:
        result = execute(spec)
    finally:
        Timeline._open_window = opened  # type: ignore[method-assign]
        Timeline._close_window = closed  # type: ignore[method-assign]
    return result, prof


def table(prof: cProfile.Profile, rows: int, top: int = 40) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof)
    out = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = short_path(file)
        out.append(
            {
                "name": f"{func} ({short}:{line})" if line else func,
                "calls_per_row": nc / rows,
                "own_us_per_row": 1e6 * tt / rows,
                "cum_us_per_row": 1e6 * ct / rows,
            }
        )
    out.sort(key=lambda r: r["own_us_per_row"], reverse=True)
    return out[:top]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out, spec = Path(args[0]), RunSpec.from_json(args[1])
    result, prof = profile_window(spec)
    if result.get("status") != "ok":
        print(json.dumps(result), file=sys.stderr)
        return 1
    prof.dump_stats(str(out.with_suffix(".prof")))
    rows = int(result["window_rows"])
    summary = {
        "window_rows": rows,
        "rows_per_s_profiled": result["rows_per_s"],
        "cpu_us_per_row_profiled": result["cpu_us_per_row"],
        "functions": table(prof, rows),
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    import os

    code = main()
    sys.stdout.flush()
    os._exit(code)
