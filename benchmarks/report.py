"""Markdown tables, JSON and the http plot, from summarised results."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ablations import is_variant
from .workloads.base import LATENCY_COLUMNS, LatencyColumns, Target

__all__ = [
    "Section",
    "fmt_num",
    "fmt_range",
    "latency_table",
    "load_average",
    "markdown",
    "plot_http",
    "table",
    "update_committed",
    "write_run",
]

Summary = dict[str, dict[str, Any]]

COLUMNS = (
    "pipeline",
    "rows/s median (min–max)",
    "batches/s",
    "CPU µs/row",
    "peak RSS MB",
    "peak PSS MB",
    "first batch s",
    "stop s",
    "rows lost",
    "dup / bad",
    "asyncfeed ×",
    "notes",
)


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits and k/M suffixes: 1.23M, 45.6k, 789, 0.012."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= scale:
            return f"{_sig(x / scale, digits)}{suffix}"
    return _sig(x, digits)


def _sig(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def fmt_range(stats: dict[str, float] | None, digits: int = 3) -> str:
    """``median (min–max)``, or just the median when all repetitions agree."""
    if stats is None:
        return "–"
    med = fmt_num(stats["median"], digits)
    lo, hi = fmt_num(stats["min"], digits), fmt_num(stats["max"], digits)
    return med if lo == hi else f"{med} ({lo}–{hi})"


def _median(stats: dict[str, float] | None) -> float | None:
    return None if stats is None else stats["median"]


def _lost(row: dict[str, Any]) -> str:
    acc = row.get("accounting")
    if acc is None:
        return "–"
    if acc["lost_total"] == 0:
        text = "0"
    else:
        pct = acc["lost_pct"]
        text = f"**{fmt_num(pct['median'], 2)} % ({fmt_num(acc['lost_total'])} rows)**"
    if acc["held_unknown"]:
        text += " (held rows unknown)"
    return text


def _dup_bad(row: dict[str, Any]) -> str:
    acc = row.get("accounting")
    if acc is None:
        return "–"
    dup, bad, corrupt = acc["duplicates"], acc["bad_batches"], acc["corrupt_rows"]
    text = f"{dup} / {bad}"
    if corrupt:
        text += f", {corrupt} corrupt rows"
    if dup or bad or corrupt:
        text = f"**{text}**"
    return text


def _ratio(ours: dict[str, Any] | None, row: dict[str, Any]) -> str:
    if ours is None or row is ours:
        return "1" if row is ours else "–"
    a, b = _median(ours.get("rows_per_s")), _median(row.get("rows_per_s"))
    if a is None or b is None or b <= 0:
        return "–"
    return f"{a / b:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(summary: Summary) -> str:
    """The markdown table of one workload (rows in measuring order)."""
    groups: dict[int | None, dict[str, Any] | None] = {}
    for row in summary.values():
        if row.get("primary") and row.get("status") == "ok":
            groups[row.get("group")] = row
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in summary.values():
        label = row["label"]
        if row["primary"]:
            label = f"**{label}**"
        if row["status"] != "ok":
            why = f"{row['status']}: {row.get('reason') or ''}".strip()
            cells = [label, why] + ["–"] * (len(COLUMNS) - 2)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            continue
        ours = groups.get(row.get("group"), groups.get(None))
        note = row.get("note") or ""
        if row.get("reason"):
            note = f"{note}; {row['reason']}" if note else row["reason"]
        if row["pipeline"] == "bound":
            rate = row.get("bytes_per_s")
            if rate is not None:
                note = (
                    f"{note}; {fmt_num(rate['median'])}B/s"
                    if note
                    else f"{fmt_num(rate['median'])}B/s"
                )
        cells = [
            label,
            fmt_range(row.get("rows_per_s")),
            fmt_num(_median(row.get("batches_per_s"))),
            fmt_num(_median(row.get("cpu_us_per_row")), 2),
            fmt_num(_median(row.get("peak_rss_mb"))),
            fmt_num(_median(row.get("peak_pss_mb"))),
            fmt_num(_median(row.get("first_batch_s")), 2),
            fmt_num(_median(row.get("stop_s")), 2),
            _lost(row),
            _dup_bad(row),
            _ratio(ours, row),
            note,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def latency_table(summary: Summary, columns: LatencyColumns = LATENCY_COLUMNS) -> str:
    """The table of a workload measured in µs per batch (or per call: ``columns``)."""
    cols = ("configuration", *(header for header, _, _ in columns), "notes")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in summary.values():
        label = f"**{row['label']}**" if row["primary"] else row["label"]
        if row["status"] != "ok":
            why = f"{row['status']}: {row.get('reason') or ''}".strip()
            cells = [label, why] + ["–"] * len(columns)
        else:
            cells = [label]
            for _, metric, how in columns:
                stats = row.get(metric)
                cells.append(fmt_range(stats) if how == "range" else fmt_num(_median(stats)))
            cells.append(row.get("note") or "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


@dataclass
class Section:
    """One workload's part of the report.

    ``summary`` None: not measured, ``why_not`` says why. ``kind``: ``"throughput"`` or
    ``"latency"``. ``load_before`` / ``load_after``: the machine's 1, 5 and 15 minute load
    averages just before the workload's first run and just after its last. ``columns``: a
    latency table's columns.
    """

    title: str
    description: str
    summary: Summary | None
    targets: Sequence[Target] = ()
    why_not: str | None = None
    kind: str = "throughput"
    load_before: tuple[float, ...] | None = None
    load_after: tuple[float, ...] | None = None
    columns: LatencyColumns = LATENCY_COLUMNS


def load_average() -> tuple[float, ...] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def _load_line(section: Section) -> str | None:
    def fmt(load: tuple[float, ...] | None) -> str:
        return "–" if load is None else ", ".join(f"{x:.2f}" for x in load)

    if section.load_before is None and section.load_after is None:
        return None
    return (
        f"Load average (1, 5, 15 min) before: {fmt(section.load_before)}; "
        f"after: {fmt(section.load_after)}"
    )


def markdown(meta: dict[str, Any], sections: Sequence[Section]) -> str:
    """The whole report: a header, then per workload its title, description, load averages,
    table and targets."""
    out = ["# asyncfeed benchmarks", ""]
    out.append(
        f"{meta['date']} · {meta['machine']} · Python {meta['python']} · "
        f"{meta['reps']} interleaved repetitions, each in a fresh process · "
        f"warm-up {meta['warmup_s']} s after the first batch, then a {meta['window_s']} s window"
    )
    out.append("")
    if meta.get("versions"):
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
        out.append("")
    if meta.get("load"):
        out.append(f"Load average (1, 5, 15 min) at start: {meta['load']}")
        out.append("")
    out.append(
        "Medians over the repetitions, min–max in parentheses. *asyncfeed ×* is asyncfeed's "
        "reference configuration (bold) divided by the row's rows/s. *rows lost*: rows "
        "produced but neither delivered nor still held by the pipeline at the end, found "
        "with counter-based row ids; *dup / bad*: rows delivered twice / batches failing the "
        "check (blob count, dtype, shape, exactly batch_size rows). CPU is user + system of "
        "the whole process tree during the window; memory is the peak summed over the tree "
        "(RSS counts pages shared by forked workers once per process; PSS splits them). On "
        "a machine that other work keeps busy, rows/s drift with the load; CPU µs/row "
        "drifts much less, and the targets also give the ratio per CPU second."
    )
    for sec in sections:
        out += ["", f"## {sec.title}", "", sec.description, ""]
        if (load := _load_line(sec)) is not None:
            out += [load, ""]
        if sec.summary is None:
            out.append(f"*Not measured: {sec.why_not}*")
            continue
        if sec.kind == "latency":
            out.append(latency_table(sec.summary, sec.columns))
        else:
            out.append(table(sec.summary))
        if sec.targets:
            out += ["", "Targets:", ""]
            out += [t.render() for t in sec.targets]
    out.append("")
    return "\n".join(out)


PANELS = (
    ("same", "same fetch code (like for like)"),
    ("own", "each pipeline's own path"),
)


def _series(summary: Summary) -> dict[str, dict[str, list[tuple[int, float, float, float]]]]:
    """Per panel (``same`` / ``own``), per series: (concurrency, median, min, max) points.

    Bound rows go into every panel; rows without a ``fetch`` parameter into ``same``;
    ablation and metrics rows (one concurrency each) into none.
    """
    panels: dict[str, dict[str, list[tuple[int, float, float, float]]]] = {}
    for row in summary.values():
        stats = row.get("rows_per_s")
        if row.get("group") is None or stats is None or row.get("status") != "ok":
            continue
        params = row.get("params", {})
        if is_variant(params):
            continue
        name = row.get("series") or params.get("series") or row["pipeline"]
        point = (int(row["group"]), stats["median"], stats["min"], stats["max"])
        where = (
            [p for p, _ in PANELS] if row["pipeline"] == "bound" else [params.get("fetch", "same")]
        )
        for panel in where:
            panels.setdefault(panel, {}).setdefault(name, []).append(point)
    return {
        p: panels[p]
        for p, _ in PANELS
        if p in panels and any(not n.startswith("bound") for n in panels[p])
    }


_COLOURS = (  # one colour per pipeline, the same in both panels
    ("processes=2", "tab:red"),
    ("RayActors", "tab:olive"),
    ("asyncfeed", "tab:green"),
    ("torchdata", "tab:brown"),
    ("SPDL", "tab:orange"),
    ("DataLoader", "tab:blue"),
    ("classic", "tab:purple"),
)


def _colour(series: str) -> str:
    return next((c for key, c in _COLOURS if key in series), "tab:gray")


def plot_http(summary: Summary | None, path: Path) -> bool:
    """Rows/s against concurrency, one line per pipeline, one panel for the same-fetch rows
    and one for the own-path rows; False when there is nothing to plot."""
    panels = _series(summary or {})
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = dict(PANELS)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.5 * len(panels), 4.8), dpi=120, sharey=True, squeeze=False
    )
    for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for name, points in sorted(series.items()):
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            lo = [p[1] - p[2] for p in points]
            hi = [p[3] - p[1] for p in points]
            style: dict[str, Any] = {"linewidth": 1.2, "color": _colour(name)}
            if name.startswith("asyncfeed"):
                style["linewidth"] = 2.5
            if name.startswith("bound"):
                style = {"linestyle": "--", "color": "grey"}
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_title(titles[panel], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("images/s (median, min–max)")
    fig.suptitle("http: GET 256×256 JPEG (20 ms latency) + decode, batch 32", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_run(directory: Path, text: str, data: dict[str, Any], http: Summary | None) -> list[Path]:
    """Write one run's ``results.md``, ``results.json`` and ``http.png`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / "results.md"
    md.write_text(text)
    js = directory / "results.json"
    js.write_text(json.dumps(data, indent=1, default=str))
    written = [md, js]
    png = directory / "http.png"
    if plot_http(http, png):
        written.append(png)
    return written


def update_committed(run: Path, results: Path) -> list[Path]:
    """Copy a run's files over the committed ``latest.md``, ``latest.json`` and ``http.png``."""
    written = []
    for name, target in (
        ("results.md", "latest.md"),
        ("results.json", "latest.json"),
        ("http.png", "http.png"),
    ):
        if (run / name).exists():
            shutil.copyfile(run / name, results / target)
            written.append(results / target)
    return written
