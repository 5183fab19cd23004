"""Sample a measuring process and its children with Linux ``perf``; CPU per row by function.

py-spy misplaces samples in asyncio code on this machine (time the event loop spends in C
after a coroutine suspends lands on whichever Python function ran last), so the profiles are
taken with ``perf record --call-graph dwarf`` on CPython ≥ 3.13 started with
``-X perf_jit`` (``perf inject --jit`` then names every Python frame): the stacks hold the
Python frames and the native code under them, and the sampling clock is the kernel's.

``record`` runs ``python -m benchmarks.worker`` under perf with a given interpreter (one
with numpy, aiohttp, simplejpeg, Pillow, psutil, aiofiles and tqdm; torch is not needed for
asyncfeed's rows) and returns the worker's result and the samples as collapsed stacks.
Interpreter plumbing between two Python frames (eval loop, vectorcall, trampolines) is left
out of the stacks; native frames under the innermost Python frame are kept.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..harness import ROOT
from ..spec import RunSpec

__all__ = ["Profile", "Sample", "perf_available", "record"]

IMPORTING = ("_find_and_load", "<frozen importlib._bootstrap")
_HEADER = re.compile(r"^(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)(?:\s|$)")
_FRAME = re.compile(r"^\s*[0-9a-f]+ (?P<sym>.+?) \((?P<dso>[^()]*)\)$")
_LIBPYTHON = re.compile(r"libpython3\.\d+\.so|/python3\.\d+$|jitted-\d+-\d+\.so")
NATIVE_KEEP = 8  # native frames kept under the innermost Python frame


def perf_available() -> str | None:
    """None when ``perf`` can record here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    try:
        paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except OSError:
        return None
    return None if paranoid <= 2 else f"kernel.perf_event_paranoid is {paranoid} (needs <= 2)"


@dataclass
class Sample:
    pid: int
    thread: str
    frames: tuple[str, ...]  # root first
    python_leaf: str | None  # innermost Python frame
    native_leaf: str
    dso: str


@dataclass
class Profile:
    """Samples of one run, with the rows it delivered."""

    rows: int
    rate: int
    samples: list[Sample] = field(default_factory=list)
    startup: int = 0
    roles: dict[int, str] = field(default_factory=dict)

    def us(self, n: int) -> float:
        """Samples → µs of CPU per delivered row."""
        return 1e6 * n / self.rate / self.rows if self.rows else 0.0

    def collapsed(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        for s in self.samples:
            out[";".join((self.roles.get(s.pid, "process"), s.thread, *s.frames))] += 1
        return dict(out)

    def per_thread(self, top: int = 12) -> dict[str, list[dict[str, Any]]]:
        """Self time by Python function, for each (process, thread)."""
        groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for s in self.samples:
            name = s.python_leaf or f"[native only] {s.native_leaf}"
            groups[f"{self.roles.get(s.pid, 'process')} / {s.thread}"][name] += 1
        total = len(self.samples) or 1
        return {
            group: [
                {
                    "name": k,
                    "us_per_row": round(self.us(v), 3),
                    "share_pct": round(100 * v / total, 1),
                }
                for k, v in counts.most_common(top)
            ]
            for group, counts in sorted(groups.items(), key=lambda kv: -sum(kv[1].values()))
        }

    def table(self, key: str, top: int = 25) -> list[dict[str, Any]]:
        """Samples grouped by ``key``: ``python_self`` (innermost Python frame and the
        native code under it), ``python_total`` (any Python frame on the stack), ``native``
        (leaf symbol), ``dso`` (leaf library), ``thread``, ``process``; ``python_total``
        counts asyncfeed's own functions only."""
        counts: collections.Counter[str] = collections.Counter()
        for s in self.samples:
            if key == "python_self":
                counts[s.python_leaf or f"[native only] {s.native_leaf}"] += 1
            elif key == "python_total":  # asyncfeed's own functions only
                for f in {f for f in s.frames if "(asyncfeed/" in f}:
                    counts[f] += 1
            elif key == "native":
                counts[s.native_leaf] += 1
            elif key == "dso":
                counts[s.dso] += 1
            elif key == "thread":
                counts[f"{self.roles.get(s.pid, 'process')} / {s.thread}"] += 1
            elif key == "process":
                counts[self.roles.get(s.pid, "process")] += 1
            else:
                raise ValueError(key)
        total = len(self.samples) or 1
        return [
            {
                "name": k,
                "us_per_row": round(self.us(v), 3),
                "share_pct": round(100 * v / total, 1),
            }
            for k, v in counts.most_common(top)
        ]


def record(
    spec: RunSpec, python: str, *, rate: int = 499, timeout: float = 300
) -> tuple[dict[str, Any], Profile]:
    """Run ``spec`` under perf with ``python -X perf_jit``; the worker's result and samples.

    Raises:
        RuntimeError: perf failed, or the run did.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHON_PERF_JIT_SUPPORT"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # as benchmarks.harness.run_one
    with tempfile.TemporaryDirectory(prefix="asyncfeed-perf-") as tmp:
        data, jit, result_path = Path(tmp, "p.data"), Path(tmp, "p.jit.data"), Path(tmp, "r.json")
        cmd = ["perf", "record", "-F", str(rate), "-k", "1", "--call-graph", "dwarf,32768"]
        cmd += ["-o", str(data), "--", python, "-X", "perf_jit", "-m", "benchmarks.worker"]
        cmd += ["--result", str(result_path), spec.to_json()]
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if not result_path.exists():
            raise RuntimeError(f"perf record failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        if result.get("status") != "ok":
            raise RuntimeError(f"the profiled run failed: {result.get('reason')}")
        pids: set[int] = set()
        try:
            subprocess.run(
                ["perf", "inject", "--jit", "-i", str(data), "-o", str(jit)],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            script = subprocess.run(
                ["perf", "script", "-F", "comm,pid,tid,ip,sym,dso", "-i", str(jit)],
                capture_output=True, text=True, timeout=timeout, check=True,
            )  # fmt: skip
            profile = Profile(rows=int(result["accounting"]["delivered"]), rate=rate)
            _parse(script.stdout, profile, pids)
        finally:
            for pid in pids:
                for junk in glob.glob(f"/tmp/jitted-{pid}-*.so") + glob.glob(
                    f"/tmp/jit-{pid}.dump"
                ):
                    os.unlink(junk)
    return result, profile


def _parse(text: str, profile: Profile, pids: set[int]) -> None:
    first_pid: int | None = None
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        head = _HEADER.match(lines[0])
        if head is None:
            continue
        pid = int(head["pid"])
        pids.add(pid)
        if first_pid is None:
            first_pid = pid
            profile.roles[pid] = "measuring process"
        profile.roles.setdefault(pid, "worker process")
        raw: list[tuple[str, str]] = []
        for line in lines[1:]:
            m = _FRAME.match(line)
            if m:
                raw.append((m["sym"], m["dso"]))
        # an inlined frame belongs to the library of the next real frame outwards
        dso = ""
        for i in range(len(raw) - 1, -1, -1):
            if raw[i][1] == "inlined":
                raw[i] = (raw[i][0], dso)
            else:
                dso = raw[i][1]
        tid = int(head["tid"])
        thread = "main thread" if tid == pid else "other threads (pools, helpers)"
        sample = _sample(pid, thread, raw)
        if sample is None:
            profile.startup += 1
        else:
            profile.samples.append(sample)


def short_path(path: str) -> str:
    """A source path without the machine's prefix: ``asyncfeed/rebatch.py``, ``numpy/...``."""
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest if marker == "site-packages/" else rest.split("/", 1)[-1]
    for package in ("/asyncfeed/", "/benchmarks/", "/tests/"):
        if package in path:  # a checkout, wherever it lies
            return package[1:] + path.rsplit(package, 1)[1]
    return path[len(str(ROOT)) + 1 :] if path.startswith(str(ROOT)) else path


def _python_frame(sym: str) -> str:
    # py::Channel.get:/work/wt14/asyncfeed/queues.py+0x5
    body = sym[4:].rsplit("+0x", 1)[0]
    func, _, file = body.partition(":")
    return f"{func} ({short_path(file)})"


def _native_frame(sym: str, dso: str) -> str:
    sym = sym.rsplit("+0x", 1)[0]
    if "kernel" in dso:
        return f"[k] {sym}"
    lib = os.path.basename(dso).split(".")[0] or "?"
    return f"[{lib}] {sym}"


def _sample(pid: int, thread: str, raw: list[tuple[str, str]]) -> Sample | None:
    """Leaf-first perf frames → a sample (None for start-up: inside the import system)."""
    frames: list[str] = []  # leaf first
    python_leaf: str | None = None
    native_below = 0
    for sym, dso in raw:
        if sym.startswith("py::"):
            name = _python_frame(sym)
            if any(m in name for m in IMPORTING):
                return None
            python_leaf = python_leaf or name
            frames.append(name)
        elif python_leaf is None:
            # under the innermost Python frame: the leaf, then what is not eval-loop plumbing
            leaf = not frames
            if native_below < NATIVE_KEEP and (leaf or not _LIBPYTHON.search(dso)):
                frames.append(_native_frame(sym, dso))
                native_below += 1
        elif not _LIBPYTHON.search(dso) and "kernel" not in dso:
            frames.append(_native_frame(sym, dso))  # e.g. _asyncio task_step between frames
    if not raw:
        return None
    leaf_sym, leaf_dso = raw[0]
    native_leaf = _native_frame(leaf_sym, leaf_dso)
    dso = "kernel" if "kernel" in leaf_dso else os.path.basename(leaf_dso)
    if _LIBPYTHON.search(leaf_dso):
        dso = "libpython (interpreter, objects)"
    return Sample(pid, thread, tuple(reversed(frames)), python_leaf, native_leaf, dso)
