"""What one measurement is: a workload, a pipeline configuration and the phase durations.

A :class:`RunSpec` travels to the measuring subprocess as JSON, so everything in it is plain
data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .runner import Phases

__all__ = ["RunSpec", "Unavailable"]


class Unavailable(Exception):
    """The pipeline or workload cannot run here (a peer did not install, an API is missing)."""


@dataclass(frozen=True)
class RunSpec:
    """One configuration of one workload.

    Attributes:
        workload: workload name (``overhead``, ``rebatch``, ``http``, ``handoff``).
        pipeline: pipeline kind, as the workload knows it (``asyncfeed``, ``classic``, …).
        label: the row's name in the table.
        params: pipeline parameters (concurrency, workers, …); JSON-able.
        phases: phase durations.
        primary: asyncfeed's reference configuration, the one ratios are computed against.
        group: a number that groups rows for plots (e.g. the concurrency), or None.
    """

    workload: str
    pipeline: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    phases: Phases = field(default_factory=Phases)
    primary: bool = False
    group: int | None = None

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.label}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        raw = json.loads(text)
        raw["phases"] = Phases(**raw["phases"])
        return cls(**raw)
