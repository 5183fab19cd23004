"""What every workload provides."""

from __future__ import annotations

import abc
from typing import Any

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec

__all__ = ["Target", "Workload"]


class Target:
    """One line of a workload's targets: a description and whether the run met it."""

    def __init__(self, text: str, met: bool | None, detail: str = "") -> None:
        self.text = text
        self.met = met
        self.detail = detail

    def render(self) -> str:
        mark = {True: "met", False: "MISSED", None: "n/a"}[self.met]
        detail = f" — {self.detail}" if self.detail else ""
        return f"- {self.text}: **{mark}**{detail}"


class Workload(abc.ABC):
    """A workload: its configurations, how to build each pipeline, how to check its batches."""

    name: str
    title: str
    description: str

    def available(self) -> str | None:
        """None when the workload can run here, else why not (shown instead of a table)."""
        return None

    @abc.abstractmethod
    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        """The configurations to measure, in the order they are interleaved."""

    @abc.abstractmethod
    def checker(self, spec: RunSpec) -> BatchChecker: ...

    @abc.abstractmethod
    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        """Build the runner for ``spec`` (in the measuring subprocess).

        Raises:
            Unavailable: the pipeline cannot run here.
        """

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        """Measure a configuration that is not a pipeline (a bound); returns its metrics."""
        raise NotImplementedError(f"{self.name} has no measurement {spec.pipeline!r}")

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        """The workload's targets, judged on the summarised results (keyed by label)."""
        return []
