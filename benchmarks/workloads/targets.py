"""Judging targets on summarised results (see ``benchmarks.harness.summarise``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Target

__all__ = [
    "best",
    "bound_target",
    "cost_target",
    "labelled",
    "lossless_target",
    "median",
    "primary",
    "ratio_target",
]

Summary = dict[str, dict[str, Any]]


def median(row: dict[str, Any] | None, metric: str = "rows_per_s") -> float | None:
    if row is None or row.get("status") != "ok":
        return None
    value = row.get(metric)
    return None if value is None else value.get("median")


def primary(summary: Summary, group: int | None = None) -> dict[str, Any] | None:
    """asyncfeed's reference row (of ``group``, when given)."""
    for row in summary.values():
        if row.get("primary") and (group is None or row.get("group") == group):
            return row
    return None


def labelled(summary: Summary, prefix: str) -> dict[str, Any] | None:
    """The first row whose label starts with ``prefix``."""
    return next((r for r in summary.values() if str(r["label"]).startswith(prefix)), None)


def best(
    summary: Summary, keep: Callable[[dict[str, Any]], bool], metric: str = "rows_per_s"
) -> dict[str, Any] | None:
    """The row with the highest median ``metric`` among those ``keep`` accepts."""
    rows = [r for r in summary.values() if keep(r) and median(r, metric) is not None]
    return max(rows, key=lambda r: median(r, metric) or 0.0, default=None)


def ratio_target(
    summary: Summary,
    prefix: str,
    factor: float,
    text: str,
    ours: dict[str, Any] | None = None,
    *,
    info: bool = False,
) -> Target:
    """``ours`` (default: the primary row) ≥ ``factor`` × the best row labelled ``prefix``…"""
    ours = ours if ours is not None else primary(summary)
    theirs = best(summary, lambda r: str(r["label"]).startswith(prefix))
    a, b = median(ours), median(theirs)
    if a is None or b is None or b <= 0:
        return Target(text, None, "not measured", info=info)
    ratio = a / b
    detail = f"{ratio:.1f}× ({theirs['label'] if theirs else ''})"
    ca, cb = median(ours, "cpu_us_per_row"), median(theirs, "cpu_us_per_row")
    if ca and cb:
        detail += f"; per CPU second {cb / ca:.1f}× ({ca:.2f} vs {cb:.2f} µs/row)"
    return Target(text, ratio >= factor, detail, info=info)


def bound_target(
    summary: Summary,
    prefix: str,
    fraction: float,
    text: str,
    ours: dict[str, Any] | None = None,
    *,
    info: bool = False,
) -> Target:
    """``ours`` (default: the primary row) ≥ ``fraction`` of the bound labelled ``prefix``…"""
    ours = ours if ours is not None else primary(summary)
    bound = best(summary, lambda r: str(r["label"]).startswith(prefix))
    a, b = median(ours), median(bound)
    if a is None or b is None or b <= 0:
        return Target(text, None, "not measured", info=info)
    detail = f"{100 * a / b:.0f} % of the bound"
    ca, cb = median(ours, "cpu_us_per_row"), median(bound, "cpu_us_per_row")
    if ca and cb:
        detail += f"; per CPU second {100 * cb / ca:.0f} % ({ca:.2f} vs {cb:.2f} µs/row)"
    return Target(text, a / b >= fraction, detail, info=info)


def lossless_target(summary: Summary, text: str, ours: dict[str, Any] | None = None) -> Target:
    ours = ours if ours is not None else primary(summary)
    if ours is None or ours.get("status") != "ok":
        return Target(text, None, "not measured")
    acc = ours["accounting"]
    ok = acc["lost_total"] == 0 and acc["duplicates"] == 0 and acc["bad_batches"] == 0
    return Target(
        text,
        ok,
        f"{acc['lost_total']} lost, {acc['duplicates']} duplicated, "
        f"{acc['bad_batches']} bad batches over {ours['reps']} runs",
    )


def _spread(row: dict[str, Any], metric: str) -> float | None:
    """Half the min–max range of ``metric`` over the repetitions, in % of the median."""
    stats = row.get(metric)
    if not stats or not stats.get("median"):
        return None
    return 50 * float(stats["max"] - stats["min"]) / float(stats["median"])


def cost_target(
    summary: Summary, on_label: str, off_label: str, limit_pct: float, text: str
) -> Target:
    """What a feature costs: the row with it (``on_label``) against the same configuration
    without it (``off_label``), in rows/s lost and in CPU µs per row added, both < ``limit_pct``
    % at the medians (a negative cost, i.e. noise in its favour, meets it)."""
    on, off = summary.get(on_label), summary.get(off_label)
    rate_on, rate_off = median(on), median(off)
    cpu_on, cpu_off = median(on, "cpu_us_per_row"), median(off, "cpu_us_per_row")
    if on is None or off is None or not rate_on or not rate_off or not cpu_on or not cpu_off:
        return Target(text, None, "not measured")
    rate_cost = 100 * (1 - rate_on / rate_off)
    cpu_cost = 100 * (cpu_on / cpu_off - 1)
    detail = (
        f"rows/s {rate_cost:+.1f} % ({rate_on / 1e3:.1f}k with vs {rate_off / 1e3:.1f}k "
        f"without), CPU µs/row {cpu_cost:+.1f} % ({cpu_on:.2f} vs {cpu_off:.2f})"
    )
    spreads = [x for row in (on, off) if (x := _spread(row, "rows_per_s")) is not None]
    if spreads:
        detail += f"; rows/s spread over the repetitions ±{max(spreads):.1f} %"
    return Target(text, rate_cost < limit_pct and cpu_cost < limit_pct, detail)
