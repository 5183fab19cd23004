"""What every workload provides."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..checks import BatchChecker
from ..data import Streams
from ..runner import Phases, Runner
from ..spec import RunSpec

__all__ = ["LATENCY_COLUMNS", "LatencyColumns", "Target", "Workload"]

#: A latency table's columns after the configuration: (header, metric, "range" or "median").
LatencyColumns = Sequence[tuple[str, str, str]]
LATENCY_COLUMNS: LatencyColumns = (
    ("µs per batch median (min–max)", "us_per_batch", "range"),
    ("batches/s", "batches_per_s", "median"),
)


class Target:
    """One line of a workload's targets: a description and whether the run met it.

    ``info=True``: a figure reported next to the targets, judged against nothing.
    """

    def __init__(
        self, text: str, met: bool | None, detail: str = "", *, info: bool = False
    ) -> None:
        self.text = text
        self.met = met
        self.detail = detail
        self.info = info

    def render(self) -> str:
        if self.info:
            return f"- {self.text} (reported, no target): {self.detail or 'not measured'}"
        mark = {True: "met", False: "MISSED", None: "n/a"}[self.met]
        detail = f" — {self.detail}" if self.detail else ""
        return f"- {self.text}: **{mark}**{detail}"


class Workload(abc.ABC):
    """A workload: its configurations, how to build each pipeline, how to check its batches."""

    name: str
    title: str
    description: str
    #: "throughput" (rows/s, CPU, memory, accounting) or "latency" (µs per batch)
    table_kind: str = "throughput"
    #: the columns of a latency table
    latency_columns: LatencyColumns = LATENCY_COLUMNS

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

    @contextlib.contextmanager
    def session(self) -> Iterator[dict[str, Any]]:
        """Set-up shared by every run of the workload (e.g. a server), in the parent process.

        Yields parameters merged into every spec's ``params``.
        """
        yield {}

    def decorate(self, summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The summary as the table shows it (a workload may add derived rows)."""
        return summary

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        """The workload's targets, judged on the summarised results (keyed by label)."""
        return []
