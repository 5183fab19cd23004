"""handoff: µs per batch through the bridge into a BlobsQueue and the torch CPU sink.
Needs ``asyncfeed.sinks`` (issue 3)."""

from __future__ import annotations

import importlib

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Workload


class Handoff(Workload):
    name = "handoff"
    title = "device handoff: µs per batch through the bridge into a sink"
    description = "Not built yet."

    def available(self) -> str | None:
        try:
            importlib.import_module("asyncfeed.sinks")
        except ImportError as exc:
            return f"not available yet: asyncfeed.sinks does not import ({exc})"
        return "not available yet: the handoff workload waits for the issue 3 APIs on main"

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        return []

    def checker(self, spec: RunSpec) -> BatchChecker:
        raise Unavailable("handoff workload not available yet")

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        raise Unavailable("handoff workload not available yet")


WORKLOAD = Handoff()
