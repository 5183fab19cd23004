"""http: GET one 256×256 JPEG from the embedded image service (20 ms latency), decode,
batch 32, at concurrency 8, 64 and 256 — every pipeline with the same fetch code, and each
with its own.

The service runs in a process of its own (:mod:`.http_service`), outside the measured tree;
its CPU during each window is measured too. Every key is ``(url, row id)``; the row id
travels as the label blob, so lost and duplicated rows are counted as in the synthetic
workloads.

*Same fetch* rows (like for like): every pipeline runs :mod:`benchmarks.shared_fetch` — the
async pipelines (asyncfeed, SPDL) one aiohttp session and decode pool per event loop, the
thread and process pipelines (classic, DataLoader, torchdata.nodes) one keep-alive
``http.client`` connection per thread — and the same decoder. The targets are judged on
these rows only. *Own path* rows: asyncfeed's product ``HttpFetcher`` and each peer's best
out-of-the-box equivalent (see :mod:`.http_pipes`).

Bounds, measured in the ``bound`` run with the same fetch code, one key at a time on one
thread: the *CPU bound* is GET + decode (inline) against the service with no latency,
with the faster of the two clients, times the cores; the *round trip* is one key through
:class:`~benchmarks.shared_fetch.AsyncFetch` (decode in its pool, as the pipelines call it)
against the 20 ms service. The bound at concurrency C is min(C / round trip, CPU bound).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from ..ablations import is_variant, variant_label, variant_of
from ..checks import BatchChecker, BlobSpec
from ..data import STREAM_SHIFT, Streams
from ..runner import Phases, Runner
from ..spec import RunSpec
from .base import Target, Workload
from .http_pipes import BATCH, build
from .targets import cost_target, median

__all__ = ["Http", "WORKLOAD", "image_services", "keys"]

LATENCY_S = 0.020
SIZE = 256
IMAGES = 256
CONCURRENCY = (8, 64, 256)
DATALOADER_MAX_WORKERS = 64
RAY_CONCURRENCY = (64, 256)  # RayActors(2) rows: where the target is
VARIANT_CONCURRENCY = 64  # attribution off and metrics on: one concurrency, few rows
SAME = "asyncfeed (same fetch)"
ROUND_TRIP_WINDOW_S = 1.0


def keys(
    streams: Streams, template: str, stream: int = 0, start: int = 0, step: int = 1
) -> Iterator[tuple[str, int]]:
    """``(url, row id)`` keys cycling over the service's images; ends once draining.

    A key counts as produced when it is handed out.
    """
    base = stream << STREAM_SHIFT
    n = 0
    i = start
    while not streams.draining:
        streams.set_produced(stream, n + 1)
        yield template.format(i=i % IMAGES), base + n
        n += 1
        i += step


def _spec(
    workload: str,
    phases: Phases,
    c: int,
    pipeline: str,
    series: str,
    fetch: str,
    primary: bool = False,
    **params: Any,
) -> RunSpec:
    params = {"concurrency": c, "series": series, "fetch": fetch, **params}
    return RunSpec(workload, pipeline, f"{series} @ {c}", params, phases, primary, group=c)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


@contextlib.contextmanager
def image_services(max_concurrent: int | None = None) -> Iterator[dict[str, Any]]:
    """The image services (:mod:`.http_service`) in a process of their own, until the block
    ends; yields their URL templates and the process id (``service_pid``)."""
    cmd = [sys.executable, "-m", "benchmarks.workloads.http_service"]
    cmd += ["--latency-ms", str(LATENCY_S * 1000), "--count", str(IMAGES)]
    cmd += ["--size", str(SIZE)]
    if max_concurrent is not None:
        cmd += ["--max-concurrent", str(max_concurrent)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=root, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the image service exited with {proc.wait()}")
        yield {**json.loads(line), "service_pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class Http(Workload):
    name = "http"
    title = "http: GET a 256×256 JPEG (20 ms latency) + decode, batch 32"
    description = (
        "Each row is one GET from the embedded image service (its own process, outside the "
        "measured tree; 20 ms latency before every response) and one decode with asyncfeed's "
        "decoder; batches of 32, at concurrency 8, 64 and 256. **same fetch** rows run one "
        "shared fetch module (benchmarks/shared_fetch.py): asyncfeed and SPDL one aiohttp "
        "session + decode pool per event loop, the classic design, DataLoader workers and "
        "torchdata.nodes threads one keep-alive http.client connection per thread; the "
        "targets are judged on these rows. **own path** rows: asyncfeed's HttpFetcher and "
        "each peer's out-of-the-box equivalent. The CPU bound is GET + decode at zero "
        "latency, one key at a time on one thread (the faster client), times the cores; the "
        "round trip is one key at a time through the same async fetch against the 20 ms "
        "service; the bound at C is min(C / round trip, CPU bound). *server* in the notes: "
        "CPU µs per row of the image service's process during the window (it shares the "
        "machine's cores)."
    )

    def available(self) -> str | None:
        try:
            from asyncfeed.fetchers.decode import decode_image  # noqa: F401
            from asyncfeed.fetchers.http import HttpFetcher  # noqa: F401
            from asyncfeed.fetchers.service import ImageService  # noqa: F401
        except ImportError as exc:
            return f"not available yet: {exc}"
        return None

    # -- configurations ------------------------------------------------------------------------

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        out: list[RunSpec] = [
            RunSpec(self.name, "bound", "bound: CPU (GET + decode, one thread × cores)", {}, phases)
        ]
        for c in CONCURRENCY:
            spec = functools.partial(_spec, self.name, phases, c)
            same, own = "same", "own"
            out.append(spec("asyncfeed", SAME, same, True))
            if c == VARIANT_CONCURRENCY:
                out += [variant_of(out[-1], v) for v in ("attribution", "metrics")]
            out.append(spec("asyncfeed", "asyncfeed processes=2 (same fetch)", same, processes=2))
            if c in RAY_CONCURRENCY:
                label = "asyncfeed RayActors(2) (same fetch)"
                out.append(spec("asyncfeed", label, same, ray_actors=2))
            out.append(spec("classic", "classic threads (same fetch)", same))
            if c <= DATALOADER_MAX_WORKERS:
                out.append(spec("dataloader", "DataLoader (same fetch)", same, num_workers=c))
            out.append(spec("torchdata", "torchdata.nodes (same fetch)", same))
            out.append(spec("spdl", "SPDL (same fetch)", same))
            out.append(spec("asyncfeed", "asyncfeed HttpFetcher (own path)", own))
            if c == 8:
                continue  # the other own paths at 64 and 256, where the targets are
            out.append(
                spec("asyncfeed", "asyncfeed HttpFetcher processes=2 (own path)", own, processes=2)
            )
            if c <= DATALOADER_MAX_WORKERS:
                out.append(spec("dataloader", "DataLoader urllib (own path)", own, num_workers=c))
            out.append(spec("torchdata", "torchdata.nodes urllib (own path)", own))
            out.append(spec("spdl", "SPDL download + decode stages (own path)", own))
        return out

    def checker(self, spec: RunSpec) -> BatchChecker:
        return BatchChecker(
            [BlobSpec("uint8", (SIZE, SIZE, 3)), BlobSpec("int64", ())],
            BATCH,
            id_blob=1,
            id_mode="label",
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[dict[str, Any]]:
        """The image services, in their own process for every run of the workload."""
        with image_services() as params:
            yield params

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        return build(spec, streams, keys)

    # -- the bounds ----------------------------------------------------------------------------

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        """The CPU bound and the round trip, with the shared fetch code (module docstring)."""
        if spec.pipeline != "bound":
            return super().measure(spec)
        from ..runner import ServiceClock
        from ..shared_fetch import sequential_rate

        fast = spec.params["fast_url_template"]
        w, n = spec.phases.warmup, spec.phases.window
        server = ServiceClock(spec.params.get("service_pid"))
        aio = sequential_rate(fast, IMAGES, w, n, client="async", inline=True, other=server)
        server_us = aio.get("other_cpu_us_per_row")
        sync = sequential_rate(fast, IMAGES, w / 2, n / 2, client="sync", inline=True)
        rtt = sequential_rate(
            spec.params["url_template"], IMAGES, 0.1, ROUND_TRIP_WINDOW_S, client="async",
            inline=False,
        )  # fmt: skip
        best = max(aio, sync, key=lambda r: r["rows_per_s"])
        k = cores()
        result: dict[str, Any] = {
            "rows_per_s": k * best["rows_per_s"],
            "single_thread_rows_per_s": best["rows_per_s"],
            "cpu_us_per_row": best["cpu_us_per_row"],
            "round_trip_ms": rtt["round_trip_ms"],
            "window_s": best["window_s"],
            "window_rows": best["rows"],
            "note": (
                f"one thread: aiohttp {aio['rows_per_s']:.0f}/s "
                f"({aio['cpu_us_per_row']:.0f} µs CPU/row), http.client "
                f"{sync['rows_per_s']:.0f}/s; × {k} cores. Round trip (20 ms service, "
                f"AsyncFetch): {rtt['round_trip_ms']:.2f} ms"
            ),
        }
        if server_us is not None:
            result["service_cpu_us_per_row"] = server_us
            client_us = best["cpu_us_per_row"]
            with_server = k * 1e6 / (client_us + server_us)
            result["bound_with_server_rows_per_s"] = with_server
            result["note"] += (
                f". The server takes {server_us:.0f} µs CPU/row: counting it, "
                f"{k} cores give {with_server:.0f} rows/s"
            )
        return result

    # -- table and targets ---------------------------------------------------------------------

    def decorate(self, summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A bound row per concurrency, min(C / round trip, CPU bound); server CPU in notes."""
        cpu = next((r for r in summary.values() if r["pipeline"] == "bound"), None)
        cpu_rate = median(cpu)
        rtt_ms = median(cpu, "round_trip_ms") or LATENCY_S * 1000
        out: dict[str, dict[str, Any]] = {}
        for label, row in summary.items():
            if row["pipeline"] == "bound":
                out[label] = row
        for c in CONCURRENCY:
            rows = {k: r for k, r in summary.items() if r.get("group") == c}
            if not rows:
                continue
            latency_rate = c / (rtt_ms / 1000)
            if cpu_rate is not None:
                value = min(latency_rate, cpu_rate)
                which = "latency" if latency_rate <= cpu_rate else "CPU"
                out[f"bound @ {c}"] = {
                    "label": f"bound @ {c}",
                    "pipeline": "bound",
                    "params": {"series": "bound"},
                    "primary": False,
                    "group": c,
                    "reps": cpu.get("reps", 0) if cpu else 0,
                    "status": "ok",
                    "reason": None,
                    "note": f"min({c} / {rtt_ms:.2f} ms, CPU bound): {which}-bound",
                    "rows_per_s": {"median": value, "min": value, "max": value},
                }
            for label, row in rows.items():
                server = median(row, "service_cpu_us_per_row")
                if server is not None:
                    row = {**row, "note": f"{row.get('note') or ''}; server {server:.0f} µs/row"}
                driver = median(row, "driver_cpu_us_per_row")
                if driver is not None and row["pipeline"] == "asyncfeed":
                    row = {**row, "note": f"{row.get('note') or ''}; driver {driver:.0f} µs/row"}
                out[label] = row
        return out

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        return http_targets(summary) + cost_targets(summary)


def _same(summary: dict[str, dict[str, Any]], c: int, asyncfeed: bool) -> list[dict[str, Any]]:
    """The same-fetch rows of concurrency ``c`` with a rate: asyncfeed's or the peers'
    (ablations and metrics rows left out)."""
    return [
        r
        for r in summary.values()
        if r.get("group") == c
        and r.get("params", {}).get("fetch") == "same"
        and not is_variant(r.get("params", {}))
        and (r["pipeline"] == "asyncfeed") == asyncfeed
        and median(r) is not None
    ]


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(rows, key=lambda r: median(r) or 0.0, default=None)


def http_targets(summary: dict[str, dict[str, Any]]) -> list[Target]:
    """The issue's targets, judged on the same-fetch rows only."""
    out = []
    cpu = next(
        (r for r in summary.values() if r["pipeline"] == "bound" and r.get("group") is None), None
    )
    rtt = median(cpu, "round_trip_ms")
    ours8 = next((r for r in _same(summary, 8, True) if r.get("primary")), None)
    text = "asyncfeed (same fetch) ≥ 97 % of C / measured round trip at concurrency 8"
    a = median(ours8)
    if a is None or rtt is None:
        out.append(Target(text, None, "not measured"))
    else:
        b = 8 / (rtt / 1000)
        out.append(
            Target(text, a / b >= 0.97, f"{100 * a / b:.1f} % of 8 / {rtt:.2f} ms = {b:.0f}/s")
        )
    for c in (64, 256):
        mine, peer = _best(_same(summary, c, True)), _best(_same(summary, c, False))
        text = f"asyncfeed ≥ 1.5× the best peer at concurrency {c} (same fetch)"
        if mine is None or peer is None:
            out.append(Target(text, None, "not measured"))
            continue
        a, b = median(mine) or 0.0, median(peer) or 0.0
        detail = f"{a / b:.2f}× ({mine['label']} vs {peer['label']})"
        ca, cb = median(mine, "cpu_us_per_row"), median(peer, "cpu_us_per_row")
        if ca and cb:
            detail += f"; per CPU second {cb / ca:.2f}×"
        out.append(Target(text, a / b >= 1.5, detail))
    mine = _best(_same(summary, 256, True))
    text = "asyncfeed (same fetch) ≥ 80 % of the practical CPU bound at concurrency 256"
    bound = median(cpu)
    if mine is None or bound is None:
        out.append(Target(text, None, "not measured"))
    else:
        a = median(mine) or 0.0
        detail = f"{100 * a / bound:.0f} % of {bound:.0f} rows/s ({mine['label']})"
        with_server = median(cpu, "bound_with_server_rows_per_s")
        if with_server:
            detail += f"; {100 * a / with_server:.0f} % of {with_server:.0f} counting the server"
        out.append(Target(text, a / bound >= 0.80, detail))
    spdl = next((r for r in _same(summary, 256, False) if r["pipeline"] == "spdl"), None)
    text = "asyncfeed's peak RSS ≤ SPDL's at concurrency 256 (same fetch)"
    ra, rb = median(mine, "peak_rss_mb"), median(spdl, "peak_rss_mb")
    if mine is None or ra is None or rb is None:
        out.append(Target(text, None, "not measured"))
    else:
        detail = f"{ra:.0f} MB ({mine['label']}) vs SPDL {rb:.0f} MB"
        others = [r for r in _same(summary, 256, True) if r is not mine]
        for r in others:
            detail += f"; {r['label']}: {median(r, 'peak_rss_mb') or 0:.0f} MB"
        out.append(Target(text, ra <= rb, detail))
    out.append(ray_target(summary))
    return out


def cost_targets(summary: dict[str, dict[str, Any]]) -> list[Target]:
    """Attribution and metrics scraping at concurrency 64 (same fetch), on and off."""
    c = VARIANT_CONCURRENCY
    default = f"{SAME} @ {c}"
    attribution_off = f"{variant_label(SAME, 'attribution')} @ {c}"
    metrics_on = f"{variant_label(SAME, 'metrics')} @ {c}"
    where = f"same fetch @ {c}"
    return [
        cost_target(
            summary,
            default,
            attribution_off,
            2.0,
            f"attribution costs < 2 % ({where}: default vs attribution off)",
        ),
        cost_target(
            summary,
            metrics_on,
            default,
            2.0,
            f"metrics scraping costs < 2 % ({where}: scraped every 1 s vs default)",
        ),
    ]


def ray_target(summary: dict[str, dict[str, Any]]) -> Target:
    """RayActors(2) on one machine: its overhead against processes=2 (same fetch, at 256)."""
    text = "asyncfeed RayActors(2) ≥ 80 % of processes=2's rows/s at concurrency 256 (same fetch)"
    rows = {r.get("params", {}).get("series"): r for r in _same(summary, 256, True)}
    ray_row = rows.get("asyncfeed RayActors(2) (same fetch)")
    procs = rows.get("asyncfeed processes=2 (same fetch)")
    a, b = median(ray_row), median(procs)
    if a is None or b is None or b <= 0:
        return Target(text, None, "not measured")
    detail = f"{100 * a / b:.0f} % ({a:.0f} vs {b:.0f} rows/s)"
    da, db = median(ray_row, "driver_cpu_us_per_row"), median(procs, "driver_cpu_us_per_row")
    if da and db:
        detail += f"; feed's process {da:.0f} vs {db:.0f} µs CPU/row"
    return Target(text, a / b >= 0.80, detail)


WORKLOAD = Http()
