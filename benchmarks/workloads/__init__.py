"""The workloads: what is streamed, which pipelines run it, and what the table shows.

Each module defines a :class:`~benchmarks.workloads.base.Workload`; :func:`get` finds one by
name. The http and handoff workloads import the asyncfeed pieces they need lazily and report
themselves unavailable while those pieces are missing.
"""

from __future__ import annotations

import importlib

from .base import Workload

__all__ = ["NAMES", "Workload", "get"]

NAMES = ("overhead", "rebatch", "http", "throttled", "handoff", "checkpoint")


def get(name: str) -> Workload:
    """The workload called ``name``.

    Raises:
        KeyError: no such workload.
    """
    if name not in NAMES:
        raise KeyError(f"unknown workload {name!r}; choose from {', '.join(NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    workload: Workload = module.WORKLOAD
    return workload
