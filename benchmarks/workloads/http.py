"""http: GET one 256×256 JPEG (20 ms latency) from the embedded image service, decode,
batch 32, at concurrency 8, 64 and 256. Needs ``asyncfeed.http`` (issue 4)."""

from __future__ import annotations

import importlib
from typing import Any

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Workload


class Http(Workload):
    name = "http"
    title = "http: GET a 256×256 JPEG with 20 ms latency + decode, batch 32"
    description = "Not built yet."

    def available(self) -> str | None:
        try:
            importlib.import_module("asyncfeed.http")
        except ImportError as exc:
            return f"not available yet: asyncfeed.http does not import ({exc})"
        return "not available yet: the http workload waits for the issue 4 APIs on main"

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        return []

    def checker(self, spec: RunSpec) -> BatchChecker:
        raise Unavailable("http workload not available yet")

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        raise Unavailable("http workload not available yet")

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        raise Unavailable("http workload not available yet")


WORKLOAD = Http()
