"""The profiling tools: perf output parsing, flame graphs, the windowed cProfile, the
rebatcher alone, and the worker's own peak RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.profiling.flame import write_svg
from benchmarks.profiling.perf import Profile, _parse
from benchmarks.profiling.rebatcher import measure as rebatcher_alone
from benchmarks.profiling.window import profile_window, table
from benchmarks.runner import Phases
from benchmarks.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]

# Two samples as ``perf script -F comm,pid,tid,ip,sym,dso`` prints them after ``inject --jit``
# (leaf first), and one start-up sample inside the import system.
PERF_SCRIPT = """\
python 100/100
\t  1111 __memmove_avx512 (/usr/lib/libc.so.6)
\t  2222 PyArray_AssignArray (inlined)
\t  3333 array_assign_subscript (/x/numpy/_core/_multiarray_umath.cpython-313.so)
\t  4444 _PyEval_EvalFrameDefault (/py/lib/libpython3.13.so.1.0)
\t    85 py::Rebatcher.push:/work/wt14/asyncfeed/rebatch.py+0x5 (/tmp/jitted-100-1.so)
\t  5555 _PyEval_EvalFrameDefault (/py/lib/libpython3.13.so.1.0)
\t  6666 task_step_impl (/py/lib/python3.13/lib-dynload/_asyncio.cpython-313.so)
\t    85 py::RebatchStage.run:/work/wt14/asyncfeed/stages.py+0x5 (/tmp/jitted-100-2.so)

python 100/101
\t  7777 decode (/x/simplejpeg/_jpeg.so)
\t    85 py::_decode_jpeg:/work/wt14/asyncfeed/fetchers/decode.py+0x5 (/tmp/jitted-100-3.so)

python 200/200
\t  8888 _PyEval_EvalFrameDefault (/py/lib/libpython3.13.so.1.0)
\t    85 py::_find_and_load:<frozen importlib._bootstrap>+0x5 (/tmp/jitted-200-4.so)
"""


def test_perf_samples_are_attributed_to_python_functions_and_threads() -> None:
    profile = Profile(rows=1000, rate=1000)
    pids: set[int] = set()
    _parse(PERF_SCRIPT, profile, pids)
    assert pids == {100, 200} and profile.startup == 1 and len(profile.samples) == 2
    push, decode = profile.samples
    assert push.python_leaf == "Rebatcher.push (asyncfeed/rebatch.py)"
    assert push.frames == (
        "RebatchStage.run (asyncfeed/stages.py)",
        "[_asyncio] task_step_impl",
        "Rebatcher.push (asyncfeed/rebatch.py)",
        "[_multiarray_umath] array_assign_subscript",
        "[_multiarray_umath] PyArray_AssignArray",  # inlined: the library of the frame out
        "[libc] __memmove_avx512",
    )
    assert push.thread == "main thread" and decode.thread == "other threads (pools, helpers)"
    assert profile.roles == {100: "measuring process", 200: "worker process"}
    by_function = {e["name"]: e["us_per_row"] for e in profile.table("python_self")}
    assert by_function == {  # one sample at 1000 Hz over 1000 rows: 1 µs per row
        "Rebatcher.push (asyncfeed/rebatch.py)": 1.0,
        "_decode_jpeg (asyncfeed/fetchers/decode.py)": 1.0,
    }
    totals = {e["name"] for e in profile.table("python_total")}
    assert "RebatchStage.run (asyncfeed/stages.py)" in totals
    assert set(profile.per_thread()) == {
        "measuring process / main thread",
        "measuring process / other threads (pools, helpers)",
    }
    folded = profile.collapsed()
    assert sum(folded.values()) == 2
    assert all(k.startswith("measuring process;") for k in folded)


def test_flame_graph_svg(tmp_path: Path) -> None:
    path = tmp_path / "f.svg"
    write_svg({"a;b;c": 3, "a;d": 1, "e": 1}, path, "title <&>")
    text = path.read_text()
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert "title &lt;&amp;&gt;" in text and "c — 3 samples (60.0 %)" in text


def test_cprofile_covers_the_window_only() -> None:
    phases = Phases(warmup=0.02, window=0.1, idle=0.05, drain_timeout=1.0)
    spec = RunSpec("overhead", "asyncfeed", "keyed", {"keyed": True}, phases)
    result, prof = profile_window(spec)
    assert result["status"] == "ok", result
    rows = int(result["window_rows"])
    entries = {e["name"].split(" (")[0]: e for e in table(prof, rows, top=500)}
    # one fetch call per one-row chunk, counted over the window's rows only
    fetch = next(e for n, e in entries.items() if n == "fetch_one")
    assert 0.8 <= fetch["calls_per_row"] <= 1.2


def test_rebatcher_alone_against_the_copy_bound() -> None:
    results = rebatcher_alone(seconds=0.05, total_bytes=4 << 20)
    assert len(results) == 4
    for r in results:
        assert r["rebatcher_rows_per_s"] > 0 and r["bound_rows_per_s"] > 0
        assert np.isfinite(r["extra_us_per_chunk"])


def test_worker_reports_its_own_peak_rss_not_its_parents() -> None:
    ballast = np.ones(300 << 17)  # 300 MiB in this (parent) process
    code = "from benchmarks.worker import _maxrss_mb; print(_maxrss_mb()['self_maxrss_mb'])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 200
    del ballast
