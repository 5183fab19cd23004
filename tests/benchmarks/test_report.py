"""Number formatting, the markdown table, targets and summaries."""
# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.harness import Record, run_suite, summarise
from benchmarks.report import Section, fmt_num, fmt_range, latency_table, markdown, table
from benchmarks.runner import Phases
from benchmarks.spec import RunSpec
from benchmarks.workloads.base import Target
from benchmarks.workloads.targets import bound_target, lossless_target, ratio_target


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, "–"),
        (0, "0"),
        (0.01234, "0.0123"),
        (789, "789"),
        (45_612, "45.6k"),
        (1.234e6, "1.23M"),
    ],
)
def test_fmt_num(x: float | None, text: str) -> None:
    assert fmt_num(x) == text


def test_fmt_range() -> None:
    assert fmt_range(None) == "–"
    assert fmt_range({"median": 2000, "min": 1500, "max": 2500}) == "2.00k (1.50k–2.50k)"
    assert fmt_range({"median": 5, "min": 5, "max": 5}) == "5.00"


def result(rows_per_s: float, lost: int = 0, dup: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "rows_per_s": rows_per_s,
        "batches_per_s": rows_per_s / 10,
        "cpu_us_per_row": 1.0,
        "peak_rss_mb": 50.0,
        "peak_pss_mb": 40.0,
        "first_batch_s": 0.1,
        "stop_s": 0.01,
        "note": "n",
        "accounting": {
            "produced": 1000,
            "lost": lost,
            "duplicates": dup,
            "bad_batches": 0,
            "corrupt_rows": 0,
            "held_known": True,
            "first_error": None,
        },
        **extra,
    }


def specs() -> list[RunSpec]:
    p = Phases(window=0.1)
    return [
        RunSpec("w", "asyncfeed", "asyncfeed", phases=p, primary=True),
        RunSpec("w", "classic", "classic threads", phases=p),
        RunSpec("w", "spdl", "SPDL", phases=p),
        RunSpec("w", "peer", "peer missing", phases=p),
    ]


def fake_runner() -> Any:
    rates = {"asyncfeed": [900.0, 1000.0, 1100.0], "classic threads": [100.0, 200.0, 150.0]}
    calls: list[str] = []

    def run(spec: RunSpec) -> dict[str, Any]:
        calls.append(spec.label)
        if spec.label == "peer missing":
            return {"status": "unavailable", "reason": "peer does not import"}
        if spec.label == "SPDL":
            return {"status": "error", "reason": "boom"}
        rate = rates[spec.label][sum(1 for c in calls if c == spec.label) - 1]
        return result(rate, lost=300 if spec.label.startswith("classic") else 0)

    return run, calls


def test_runs_interleave_and_unavailable_ones_are_not_retried() -> None:
    run, calls = fake_runner()
    records = run_suite(specs(), reps=3, timeout=1, runner=run)
    assert calls == [
        "asyncfeed", "classic threads", "SPDL", "peer missing",
        "asyncfeed", "classic threads", "SPDL",
        "asyncfeed", "classic threads", "SPDL",
    ]  # fmt: skip
    assert all(isinstance(r, Record) for r in records)


def test_summary_has_medians_ranges_and_accounting() -> None:
    run, _ = fake_runner()
    summary = summarise(run_suite(specs(), reps=3, timeout=1, runner=run))["w"]
    ours = summary["asyncfeed"]
    assert ours["rows_per_s"] == {"median": 1000.0, "min": 900.0, "max": 1100.0}
    assert ours["reps"] == 3 and ours["status"] == "ok"
    classic = summary["classic threads"]
    assert classic["accounting"]["lost_total"] == 900
    assert classic["accounting"]["lost_pct"]["median"] == pytest.approx(30.0)
    assert summary["SPDL"]["status"] == "error" and summary["SPDL"]["reason"] == "boom"
    assert summary["peer missing"]["status"] == "unavailable"


def test_table_shows_ratios_losses_and_failures() -> None:
    run, _ = fake_runner()
    summary = summarise(run_suite(specs(), reps=3, timeout=1, runner=run))["w"]
    text = table(summary)
    lines = text.splitlines()
    assert len(lines) == 2 + 4
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    ours = next(line for line in lines if "**asyncfeed**" in line)
    classic = next(line for line in lines if "classic threads" in line)
    assert "1.00k (900–1.10k)" in ours
    assert "| 6.67 |" in classic  # 1000 / 150
    assert "**30 % (900 rows)**" in classic
    assert "unavailable: peer does not import" in text
    assert "error: boom" in text


def test_targets() -> None:
    run, _ = fake_runner()
    summary = summarise(run_suite(specs(), reps=3, timeout=1, runner=run))["w"]
    met = ratio_target(summary, "classic", 5.0, "5x classic")
    assert met.met is True and "6.7×" in met.detail
    assert ratio_target(summary, "classic", 10.0, "10x classic").met is False
    assert ratio_target(summary, "SPDL", 10.0, "10x SPDL").met is None
    assert bound_target(summary, "nothing", 0.7, "bound").met is None
    assert lossless_target(summary, "no loss").met is True
    assert "**met**" in met.render() and "**n/a**" in Target("t", None).render()


def test_markdown_has_every_section() -> None:
    run, _ = fake_runner()
    summary = summarise(run_suite(specs(), reps=3, timeout=1, runner=run))["w"]
    meta = {
        "date": "today",
        "machine": "m",
        "python": "3.11",
        "reps": 3,
        "warmup_s": 0.5,
        "window_s": 2.0,
        "versions": {"numpy": "2"},
        "load": "0.1",
    }
    text = markdown(
        meta,
        [
            Section(
                "w: title",
                "about w",
                summary,
                [Target("goal", True, "2×"), Target("figure", None, "40 %", info=True)],
                load_before=(1.5, 1.25, 1.0),
                load_after=(2.0, 1.5, 1.0),
            ),
            Section("http", "about http", None, why_not="not available yet"),
        ],
    )
    assert "## w: title" in text and "- goal: **met** — 2×" in text
    assert "- figure (reported, no target): 40 %" in text
    assert "Load average (1, 5, 15 min) before: 1.50, 1.25, 1.00; after: 2.00, 1.50, 1.00" in text
    assert text.count("Load average (1, 5, 15 min) before") == 1  # none for an unmeasured one
    assert "*Not measured: not available yet*" in text


def test_latency_table() -> None:
    summary = {
        "bridge": {
            "label": "bridge",
            "primary": True,
            "status": "ok",
            "us_per_batch": {"median": 20.0, "min": 18.0, "max": 25.0},
            "batches_per_s": {"median": 50_000.0, "min": 40_000.0, "max": 55_000.0},
            "note": "n",
        },
        "torch": {"label": "torch", "primary": False, "status": "unavailable", "reason": "no"},
    }
    lines = latency_table(summary).splitlines()
    assert "| **bridge** | 20.0 (18.0–25.0) | 50.0k | n |" in lines
    assert "| torch | unavailable: no | – | – |" in lines


def test_http_plot_is_written(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.report import plot_http

    def row(series: str, group: int, rate: float) -> dict[str, Any]:
        return {
            "label": f"{series} @ {group}",
            "pipeline": series,
            "params": {"series": series},
            "group": group,
            "status": "ok",
            "rows_per_s": {"median": rate, "min": rate * 0.9, "max": rate * 1.1},
        }

    summary = {
        r["label"]: r
        for r in [
            row(s, c, c * k) for s, k in (("asyncfeed", 5.0), ("bound", 6.0)) for c in (8, 64)
        ]
    }
    path = tmp_path / "http.png"
    assert plot_http(summary, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_http({}, tmp_path / "none.png")


def test_http_plot_has_a_panel_per_kind_of_fetch() -> None:
    from benchmarks.report import _series

    def row(series: str, fetch: str | None, group: int) -> dict[str, Any]:
        params: dict[str, Any] = {"series": series}
        if fetch:
            params["fetch"] = fetch
        pipeline = "bound" if series == "bound" else "p"
        stats = {"median": 1.0, "min": 1.0, "max": 1.0}
        return {"label": f"{series} @ {group}", "pipeline": pipeline, "params": params,
                "group": group, "status": "ok", "rows_per_s": stats}  # fmt: skip

    rows = [row("a same", "same", 8), row("a own", "own", 8), row("bound", None, 8)]
    panels = _series({r["label"]: r for r in rows})
    assert sorted(panels) == ["own", "same"]
    assert sorted(panels["same"]) == ["a same", "bound"]
    assert sorted(panels["own"]) == ["a own", "bound"]
    only_bound = _series({r["label"]: r for r in rows[2:]})
    assert only_bound == {}
