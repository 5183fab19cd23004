"""The measuring subprocess: ``python -m benchmarks.worker --result PATH SPEC_JSON``.

Runs one :class:`~benchmarks.spec.RunSpec` in a fresh interpreter and writes its result as
JSON to ``PATH``. The parent (:mod:`benchmarks.harness`) samples the memory of this process
tree from outside, so the sampling costs the measured pipeline nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from . import workloads
from .data import Streams
from .runner import ServiceClock, Timeline
from .spec import RunSpec, Unavailable

__all__ = ["MEASURED", "execute", "main"]

# Pipelines that are measurements of their own (bounds, the handoff), not pipelines to drive.
MEASURED = ("bound", "measure")


def execute(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` in this process; the result dict always has a ``status``."""
    try:
        workload = workloads.get(spec.workload)
        why_not = workload.available()
        if why_not is not None:
            raise Unavailable(why_not)
        if spec.pipeline in MEASURED:
            result = workload.measure(spec)
            result["status"] = "ok"
            return result
        streams = Streams()
        checker = workload.checker(spec)
        runner = workload.runner(spec, streams)
        timeline = Timeline(checker, spec.phases)
        if spec.params.get("service_pid") is not None:
            timeline.service = ServiceClock(int(spec.params["service_pid"]))
        try:
            runner.run(timeline)
        finally:
            streams.drain()
        result = timeline.metrics()
        result["accounting"] = checker.account(streams.produced(), timeline.held).as_dict()
        result["note"] = runner.note
        result["extras"] = runner.extras()
        result["status"] = "ok"
        return result
    except Unavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    except Exception as exc:
        return {
            "status": "error",
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }


def _maxrss_mb() -> dict[str, float]:
    """This process's peak RSS, and its waited-for children's.

    On Linux ``ru_maxrss`` survives fork and exec: a worker started by a parent larger than
    itself would report the parent's size. ``VmHWM`` in ``/proc/self/status`` belongs to
    this process's own address space, so it is used where it exists.
    """
    scale = 1 / 1024  # ru_maxrss and VmHWM are in KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) * scale
                    break
    except OSError:
        pass
    return {
        "self_maxrss_mb": own,
        "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("spec", help="the RunSpec as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = execute(RunSpec.from_json(args.spec))
    result.update(_maxrss_mb())
    tmp = f"{args.result}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.result)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Some peers leave non-daemon threads behind (a source thread that never ends); the
    # result is written, so leave without waiting for them.
    os._exit(code)
