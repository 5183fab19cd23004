"""http: GET one 256×256 JPEG from the embedded image service (20 ms latency), decode,
batch 32, at concurrency 8, 64 and 256.

The service runs in a process of its own (:mod:`.http_service`), outside the measured tree.
Every key is ``(url, row id)``; the row id travels as the label blob, so lost and duplicated
rows are counted as in the synthetic workloads. Every pipeline decodes with asyncfeed's own
decoder (``asyncfeed.fetchers.decode.decode_image``).

- asyncfeed: ``Feed.from_keys(keys, HttpFetcher(), concurrency=C)`` (aiohttp, keep-alive,
  decode in a thread pool); with ``processes=2`` too where the feed offers it.
- classic threads: C fetcher threads, each ``urllib.request`` + decode.
- DataLoader: C worker processes (up to 64), each ``urllib.request`` + decode, rows batched.
- torchdata.nodes: ``ParallelMapper`` with C threads, ``urllib.request`` + decode.
- SPDL: async download with aiohttp (concurrency C), then decode in its thread pool.

The bound at concurrency C is min(C / latency, CPU bound); the CPU bound is a sequential
aiohttp GET (keep-alive, no latency) plus decode on one thread, times the cores this process
may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..checks import BatchChecker, BlobSpec
from ..data import STREAM_SHIFT, Streams
from ..pipelines.source import Row
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Target, Workload
from .targets import median, primary

__all__ = ["Http", "WORKLOAD"]

LATENCY_S = 0.020
SIZE = 256
IMAGES = 256
BATCH = 32
CONCURRENCY = (8, 64, 256)
DATALOADER_MAX_WORKERS = 64
DRAIN_NAP_S = 0.002
BLOBS = ("image", "label")


def _api() -> tuple[Any, Any, Any]:
    """(HttpFetcher, ImageOptions, decode_image) from asyncfeed, or Unavailable."""
    try:
        from asyncfeed.fetchers.decode import ImageOptions, decode_image
        from asyncfeed.fetchers.http import HttpFetcher
    except ImportError as exc:
        raise Unavailable(f"not available yet: {exc}") from exc
    return HttpFetcher, ImageOptions, decode_image


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


@functools.cache
def _decoder() -> tuple[Any, Any]:
    _, image_options, decode_image = _api()
    return decode_image, image_options()


def decode(data: bytes, url: str) -> np.ndarray:
    """asyncfeed's own decoder, as every pipeline uses it."""
    decode_image, options = _decoder()
    return decode_image(data, options, url)  # type: ignore[no-any-return]


def urllib_row(key: tuple[str, int]) -> Row:
    """GET with ``urllib.request`` (a new connection each time), decode: one row."""
    url, ident = key
    with urllib.request.urlopen(url, timeout=30) as resp:
        data = resp.read()
    return decode(data, url), np.int64(ident)


def worker_rows(streams: Streams, template: str, worker: int, workers: int) -> Iterator[Row]:
    """One DataLoader worker's rows: its share of the keys, fetched one at a time."""
    share = keys(streams, template, stream=worker + 1, start=max(worker, 0), step=max(workers, 1))
    for key in share:
        yield urllib_row(key)


class _AiohttpGet:
    """SPDL's download stage: one aiohttp session, created on SPDL's event loop."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._session: Any = None

    async def __call__(self, key: tuple[str, int]) -> tuple[bytes, str, int]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=0)
            )
        url, ident = key
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            data = await resp.read()
        return data, url, ident


def _decode_item(item: tuple[bytes, str, int]) -> Row:
    data, url, ident = item
    return decode(data, url), np.int64(ident)


def _timed(one: Any, warmup: float, window: float) -> dict[str, float]:
    """Call ``one(i)`` for ``warmup`` seconds, then count calls over ``window`` seconds."""
    i = 0
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        one(i)
        i += 1
    n = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < window:
        one(i + n)
        n += 1
    secs = time.perf_counter() - start
    return {
        "rows_per_s": n / secs,
        "rows": n,
        "window_s": secs,
        "cpu_us_per_row": 1e6 * (time.process_time() - cpu) / n,
    }


async def _sequential_aiohttp(template: str, warmup: float, window: float) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            url = template.format(i=i % IMAGES)
            async with session.get(url) as resp:
                resp.raise_for_status()
                data = await resp.read()
            decode(data, url)

        i = 0
        deadline = time.perf_counter() + warmup
        while time.perf_counter() < deadline:
            await one(i)
            i += 1
        n = 0
        cpu = time.process_time()
        start = time.perf_counter()
        while time.perf_counter() - start < window:
            await one(i + n)
            n += 1
        secs = time.perf_counter() - start
        return {
            "rows_per_s": n / secs,
            "rows": n,
            "window_s": secs,
            "cpu_us_per_row": 1e6 * (time.process_time() - cpu) / n,
        }


def _sequential_http_client(template: str, warmup: float, window: float) -> dict[str, float]:
    first = urllib.parse.urlsplit(template.format(i=0))
    conn = http.client.HTTPConnection(first.hostname or "127.0.0.1", first.port, timeout=30)

    def one(i: int) -> None:
        path = urllib.parse.urlsplit(template.format(i=i % IMAGES)).path
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        decode(data, path)

    try:
        return _timed(one, warmup, window)
    finally:
        conn.close()


class Http(Workload):
    name = "http"
    title = "http: GET a 256×256 JPEG (20 ms latency) + decode, batch 32"
    description = (
        "Each row is one GET from the embedded image service (its own process, 20 ms "
        "latency before every response) and one decode with asyncfeed's decoder; batches "
        "of 32, at concurrency 8, 64 and 256. The bound at concurrency C is min(C / 20 ms, "
        "CPU bound), the CPU bound being a sequential keep-alive GET with no latency plus "
        "decode on one thread, times the cores."
    )

    def available(self) -> str | None:
        try:
            _api()
            from asyncfeed.fetchers.service import ImageService  # noqa: F401
        except Unavailable as exc:
            return str(exc)
        except ImportError as exc:
            return f"not available yet: {exc}"
        return None

    # -- configurations ------------------------------------------------------------------------

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        out: list[RunSpec] = [
            RunSpec(self.name, "bound", "bound: CPU (sequential GET + decode × cores)", {}, phases)
        ]
        procs = _feed_has_processes()
        for c in CONCURRENCY:

            def spec(
                pipeline: str,
                label: str,
                series: str,
                primary: bool = False,
                c: int = c,
                **params: Any,
            ) -> RunSpec:
                params = {"concurrency": c, "series": series, **params}
                return RunSpec(
                    self.name, pipeline, f"{label} @ {c}", params, phases, primary, group=c
                )

            out.append(spec("asyncfeed", "asyncfeed", "asyncfeed", True))
            out.append(spec("asyncfeed", "asyncfeed on uvloop", "asyncfeed uvloop", loop="uvloop"))
            if procs and c > 8:
                out.append(
                    spec("asyncfeed", "asyncfeed processes=2", "asyncfeed processes=2", processes=2)
                )
            out.append(spec("classic", "classic threads", "classic threads"))
            if c <= DATALOADER_MAX_WORKERS:
                out.append(spec("dataloader", "DataLoader", "DataLoader", num_workers=c))
            out.append(spec("torchdata", "torchdata.nodes", "torchdata.nodes"))
            out.append(spec("spdl", "SPDL", "SPDL"))
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
        cmd = [sys.executable, "-m", "benchmarks.workloads.http_service"]
        cmd += ["--latency-ms", str(LATENCY_S * 1000), "--count", str(IMAGES)]
        cmd += ["--size", str(SIZE)]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=root, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the image service exited with {proc.wait()}")
            yield json.loads(line)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- pipelines -----------------------------------------------------------------------------

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        http_fetcher, _, _ = _api()
        c = int(spec.params["concurrency"])
        template = spec.params["url_template"]
        kind = spec.pipeline
        if kind == "asyncfeed":
            from ..pipelines.asyncfeed_pipe import FeedAsyncRunner

            processes = spec.params.get("processes")

            def make_feed() -> Any:
                import asyncfeed as af

                extra = {"processes": processes} if processes else {}
                return af.Feed.from_keys(
                    keys(streams, template),
                    http_fetcher(),
                    blobs=list(BLOBS),
                    batch_size=BATCH,
                    concurrency=c,
                    log_interval=None,
                    **extra,
                )

            loop = spec.params.get("loop", "asyncio")
            return FeedAsyncRunner(
                streams, make_feed, note=f"HttpFetcher (aiohttp), decode pool, {loop}", loop=loop
            )
        if kind == "classic":
            from ..classic import ClassicInput
            from ..pipelines.classic_pipe import ClassicRunner

            it = keys(streams, template)
            lock = threading.Lock()
            fetching = [0]  # fetch calls in progress: the drain waits for them

            def fetch_fun(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
                with lock:
                    key = next(it, None)
                    fetching[0] += key is not None
                if key is None:
                    time.sleep(DRAIN_NAP_S)
                    return None
                try:
                    image, ident = urllib_row(key)
                finally:
                    with lock:
                        fetching[0] -= 1
                return [image[None], np.array([ident], np.int64)]

            def make_input() -> ClassicInput:
                return ClassicInput(BLOBS, fetch_fun, BATCH, num_worker_threads=c)

            runner = ClassicRunner(streams, make_input, fetching=lambda: fetching[0])
            runner.note = "C fetcher threads, urllib.request + decode"
            return runner
        if kind == "dataloader":
            from ..pipelines.dataloader import DataLoaderRunner

            return DataLoaderRunner(
                streams,
                functools.partial(worker_rows, streams, template),
                batch_size=BATCH,
                num_workers=int(spec.params["num_workers"]),
                note="one worker process per request in flight, urllib.request + decode",
            )
        if kind == "torchdata":
            from ..pipelines.torchdata_nodes import TorchdataRunner

            return TorchdataRunner(
                streams,
                functools.partial(keys, streams, template),
                urllib_row,
                batch_size=BATCH,
                num_workers=c,
                unbatch=False,
                note="ParallelMapper threads, urllib.request + decode",
            )
        if kind == "spdl":
            from ..pipelines.spdl_pipe import SpdlRunner

            decoders = min(c, 4)
            return SpdlRunner(
                streams,
                functools.partial(keys, streams, template),
                [(_AiohttpGet(c), c), (_decode_item, decoders)],
                batch_size=BATCH,
                disaggregate=False,
                num_threads=decoders,
                note=f"async aiohttp download (concurrency C), decode stage ({decoders} threads)",
            )
        raise Unavailable(f"no pipeline {kind!r} in workload {self.name}")

    # -- the CPU bound -------------------------------------------------------------------------

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        """Sequential GET (no latency) + decode on one thread, for a window, times the cores.

        The bound uses aiohttp with keep-alive, the client asyncfeed is built on (as in
        ``benchmarks/http_bench.py``); a plain ``http.client`` keep-alive loop is measured
        too and shown in the note.
        """
        if spec.pipeline != "bound":
            return super().measure(spec)
        template = spec.params["fast_url_template"]
        phases = spec.phases
        one_thread = asyncio.run(_sequential_aiohttp(template, phases.warmup, phases.window))
        plain = _sequential_http_client(template, phases.warmup / 2, phases.window / 2)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return {
            "rows_per_s": cores * one_thread["rows_per_s"],
            "single_thread_rows_per_s": one_thread["rows_per_s"],
            "http_client_rows_per_s": plain["rows_per_s"],
            "cpu_us_per_row": one_thread["cpu_us_per_row"],
            "window_s": one_thread["window_s"],
            "window_rows": one_thread["rows"],
            "note": (
                f"aiohttp: {one_thread['rows_per_s']:.0f}/s on one thread × {cores} cores "
                f"(http.client keep-alive: {plain['rows_per_s']:.0f}/s on one thread)"
            ),
        }

    # -- table and targets ---------------------------------------------------------------------

    def decorate(self, summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Add a bound row to every concurrency group: min(C / latency, CPU bound)."""
        cpu = next((r for r in summary.values() if r["pipeline"] == "bound"), None)
        cpu_rate = median(cpu)
        out: dict[str, dict[str, Any]] = {}
        for label, row in summary.items():
            if row["pipeline"] == "bound":
                out[label] = row
        for c in CONCURRENCY:
            rows = {k: r for k, r in summary.items() if r.get("group") == c}
            if not rows:
                continue
            latency_rate = c / LATENCY_S
            if cpu_rate is not None:
                value = min(latency_rate, cpu_rate)
                which = "latency" if latency_rate <= cpu_rate else "CPU"
                out[f"bound @ {c}"] = {
                    "label": f"bound @ {c}",
                    "pipeline": "bound",
                    "params": {"series": "bound"},
                    "primary": False,
                    "group": c,
                    "reps": cpu["reps"] if cpu else 0,
                    "status": "ok",
                    "reason": None,
                    "note": f"min({c} / 20 ms, CPU bound): {which}-bound",
                    "rows_per_s": {"median": value, "min": value, "max": value},
                }
            out.update(rows)
        return out

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        out = []
        ours8 = primary(summary, 8)
        bound8 = summary.get("bound @ 8")
        a, b = median(ours8), median(bound8)
        text = "asyncfeed ≥ 95 % of the bound at concurrency 8"
        if a is None or b is None:
            out.append(Target(text, None, "not measured"))
        else:
            out.append(Target(text, a / b >= 0.95, f"{100 * a / b:.0f} % of {b:.0f} rows/s"))
        for c in (64, 256):
            ours = primary(summary, c)
            peers = [
                r
                for r in summary.values()
                if r.get("group") == c
                and r["pipeline"] not in ("asyncfeed", "bound")
                and median(r) is not None
            ]
            best_peer = max(peers, key=lambda r: median(r) or 0.0, default=None)
            mine = [
                r for r in summary.values() if r.get("group") == c and r["pipeline"] == "asyncfeed"
            ]
            best_mine = max(mine, key=lambda r: median(r) or 0.0, default=ours)
            a, b = median(best_mine), median(best_peer)
            text = f"asyncfeed ≥ 1.5× the best peer at concurrency {c}"
            if a is None or b is None or best_peer is None or best_mine is None:
                out.append(Target(text, None, "not measured"))
            else:
                out.append(
                    Target(
                        text,
                        a / b >= 1.5,
                        f"{a / b:.2f}× ({best_mine['label']} vs {best_peer['label']})",
                    )
                )
            spdl = next((r for r in peers if r["pipeline"] == "spdl"), None)
            text = f"asyncfeed's peak RSS ≤ SPDL's at concurrency {c}"
            ra = median(best_mine, "peak_rss_mb") if best_mine else None
            rb = median(spdl, "peak_rss_mb")
            if ra is None or rb is None:
                out.append(Target(text, None, "not measured"))
            else:
                out.append(Target(text, ra <= rb, f"{ra:.0f} MB vs SPDL {rb:.0f} MB"))
        return out


def _feed_has_processes() -> bool:
    try:
        from asyncfeed import Feed  # noqa: F401
    except ImportError:
        return False
    return True


WORKLOAD = Http()
