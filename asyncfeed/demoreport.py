"""What ``python -m asyncfeed demo`` measured, and the summary table it prints at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LEGEND", "LIMIT_STEPS", "DemoReport"]

#: Limit changes kept for the summary (the first and the last ones).
LIMIT_STEPS = 12
LEGEND = (
    "progress: chunks, batches = waiting in the feed's queues; retried = failed requests "
    "sent again; skipped = keys given up after their last attempt; waiting = the training "
    "step's share of time spent waiting for data, and what it mostly waited for"
)


@dataclass
class DemoReport:
    """What the demo measured; filled while it runs, printed at the end."""

    source: str = ""
    consumer: str = ""
    device: str | None = None
    batch_size: int = 0
    rows: int = 0
    batches: int = 0
    waits: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    retries: int = 0
    skipped: int = 0
    max_errors: int | None = None
    errors: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    interrupted: bool = False
    limits: list[tuple[int, str]] = field(default_factory=list)
    throttled: int = 0
    service_limit: str | None = None
    wait_causes: dict[str, float] = field(default_factory=dict)  # the feed's attribution
    feed_limit: tuple[int, str] | None = None  # an adaptive feed's limit and its reason

    def table(self) -> str:
        """The summary table, one ``name  value`` row per line."""
        elapsed = (self.ended or time.perf_counter()) - self.started
        p50, p99 = np.percentile(self.waits, [50, 99]) if self.waits else (0.0, 0.0)
        rows = [
            ("rows", f"{self.rows:,}"),
            ("batches", f"{self.batches:,} of {self.batch_size}"),
            ("rows/s", f"{self.rows / elapsed:,.0f}" if elapsed > 0 else "0"),
            ("wait for a batch", f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms"),
            ("consumer waiting", self._waiting()),
            ("failures", self._failures()),
            ("retried", f"{self.retries:,} failed requests sent again"),
            ("skipped", self._skipped()),
        ]
        if self.feed_limit is not None:
            rows.append(("feed limit", f"{self.feed_limit[0]} fetches ({self.feed_limit[1]})"))
        if self.limits:
            rows.append(("host limit", self._limits()))
            rows.append(("throttled", f"{self.throttled:,} requests answered 429"))
        if self.losses:
            rows.append((f"{self.consumer} loss", f"{self.losses[0]:.3f} → {self.losses[-1]:.3f}"))
        status = ", interrupted" if self.interrupted else ""
        where = "" if self.device is None else f", {self.device} via TorchSink"
        head = f"asyncfeed demo: {self.source}, {elapsed:.1f} s{where}{status}"
        width = max(len(name) for name, _ in rows)
        return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])

    @property
    def main_cause(self) -> str | None:
        """What the consumer waited for most (``stats().consumer_wait_by_cause``)."""
        causes = self.wait_causes
        return max(causes, key=causes.__getitem__) if causes else None

    def _waiting(self) -> str:
        """``12% of the time, mostly fetch_limit (80% of the wait)``."""
        text = f"{self.waiting_share:.0%} of the time"
        cause, total = self.main_cause, sum(self.wait_causes.values())
        if cause is None or total <= 0:
            return text
        return f"{text}, mostly {cause} ({self.wait_causes[cause] / total:.0%} of the wait)"

    def _failures(self) -> str:
        """Every failed request by kind: each was either retried or its key skipped."""
        if not self.errors:
            return "none"
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.errors.items()))
        return f"{sum(self.errors.values()):,} ({kinds})"

    def _limits(self) -> str:
        """The host limit's path: ``16 → 32 → 17 (probing) → 16 (hold)``."""
        steps = self.limits
        if len(steps) > LIMIT_STEPS:
            steps = [*steps[: LIMIT_STEPS // 2], (-1, ""), *steps[-LIMIT_STEPS // 2 :]]
        path = " → ".join("…" if n < 0 else str(n) for n, _ in steps)
        served = "" if self.service_limit is None else f"; the service allows {self.service_limit}"
        return f"{path} ({steps[-1][1]}){served}"

    def _skipped(self) -> str:
        budget = "" if self.max_errors is None else f", at most --max-errors {self.max_errors:,}"
        return f"{self.skipped:,} keys given up after their last attempt{budget}"

    @property
    def waiting_share(self) -> float:
        """The consumer's share of the run spent waiting for batches (its starvation)."""
        elapsed = (self.ended or time.perf_counter()) - self.started
        return min(1.0, sum(self.waits) / elapsed) if elapsed > 0 else 0.0
