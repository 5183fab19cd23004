"""HTTP image workload: rows/s through ``asyncfeed.fetchers.http`` against the bound it could reach.

The image service runs in a child process (``python -m asyncfeed serve-images``), so the
server's Python work does not share the client's GIL. For each concurrency the feed streams
256x256 JPEGs (20 ms latency per response by default), batch 32, and the rate is compared
with ``min(concurrency / latency, cpu_bound)``, where ``cpu_bound`` is a sequential GET with
no latency plus decode on one thread, times the cores::

    python -m benchmarks.http_bench                      # concurrency 8, 64, 256
    python -m benchmarks.http_bench --concurrency 64 --seconds 10

The later benchmark suite calls :func:`measure_http` and :func:`measure_cpu_bound`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image

COUNT = 300
SIZE = 256
BATCH = 32


@contextlib.contextmanager
def serve_in_subprocess(
    latency_ms: float, *, count: int = COUNT, size: int = SIZE, flags: Sequence[str] = ()
) -> Iterator[str]:
    """Run the image service (``python -m asyncfeed serve-images``, no injected errors, any
    other ``flags``) in a child process; yield its URL template."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncfeed",
            "serve-images",
            f"--latency-ms={latency_ms}",
            f"--count={count}",
            f"--size={size}",
            "--error-rate=0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"at (http://\S+)", line)
            if match is None:
                raise RuntimeError(f"the image service did not start: {line!r}")
            yield match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _stream(
    template: str, concurrency: int, seconds: float, warmup: float, processes: int | None = None
) -> dict[str, Any]:
    keys = (template.format(i=i) for i in itertools.cycle(range(COUNT)))
    fetcher = af.HttpFetcher()
    feed = af.Feed.from_keys(
        keys,
        fetcher,
        blobs=["data"],
        batch_size=BATCH,
        concurrency=concurrency,
        processes=processes,
        log_interval=None,
    )
    rows = 0
    async with feed:
        end_warmup = time.perf_counter() + warmup
        async for _ in feed:
            if time.perf_counter() >= end_warmup:
                break
        start = time.perf_counter()
        async for batch in feed:
            rows += batch.rows
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
        hosts = feed.stats().hosts
    no_host: Mapping[str, Any] = {"latency_p50": 0.0, "latency_p99": 0.0, "errors": {}}
    host = next(iter(hosts.values()), no_host)
    return {
        "rows_per_s": rows / elapsed,
        "latency_p50_ms": host["latency_p50"] * 1e3,
        "latency_p99_ms": host["latency_p99"] * 1e3,
        "errors": sum(host["errors"].values()),
    }


def measure_http(
    concurrency: int,
    seconds: float = 5.0,
    *,
    latency_ms: float = 20.0,
    cpu_bound: float | None = None,
    warmup: float = 1.0,
    processes: int | None = None,
) -> dict[str, Any]:
    """Rows/s of the HTTP workload at ``concurrency``, with its bound and the ratio to it.

    ``cpu_bound`` (rows/s) is measured with :func:`measure_cpu_bound` when not given;
    ``processes`` runs the fetchers in that many worker processes (``Feed(processes=N)``).
    """
    if cpu_bound is None:
        cpu_bound = measure_cpu_bound()["cpu_bound"]
    with serve_in_subprocess(latency_ms) as template:
        result = asyncio.run(_stream(template, concurrency, seconds, warmup, processes))
    bound = min(concurrency / (latency_ms / 1e3), cpu_bound) if latency_ms else cpu_bound
    return {
        "workload": "http_jpeg_256",
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "batch_size": BATCH,
        "processes": processes,
        "bound": bound,
        "ratio": result["rows_per_s"] / bound,
        **result,
    }


async def _sequential(template: str, seconds: float) -> float:
    options = af.ImageOptions()
    async with aiohttp.ClientSession() as session:
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            async with session.get(template.format(i=n % COUNT)) as resp:
                data = await resp.read()
            decode_image(data, options, "bench")
            n += 1
        return n / (time.perf_counter() - start)


def measure_cpu_bound(seconds: float = 3.0) -> dict[str, Any]:
    """Sequential GET (no latency) plus decode on one thread, and that times the cores."""
    with serve_in_subprocess(0.0) as template:
        one_thread = asyncio.run(_sequential(template, seconds))
    cores = len(os.sched_getaffinity(0))
    return {"one_thread": one_thread, "cores": cores, "cpu_bound": one_thread * cores}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_bench")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[8, 64, 256])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=None, help="Feed(processes=N)")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    args = parser.parse_args()
    cpu = measure_cpu_bound()
    if not args.json:
        print(
            f"CPU bound: {cpu['one_thread']:.0f} rows/s sequential GET + decode on one thread "
            f"x {cpu['cores']} cores = {cpu['cpu_bound']:.0f} rows/s"
        )
    else:
        print(json.dumps(cpu))
    for c in args.concurrency:
        r = measure_http(
            c,
            args.seconds,
            latency_ms=args.latency_ms,
            cpu_bound=cpu["cpu_bound"],
            processes=args.processes,
        )
        if args.json:
            print(json.dumps(r))
            continue
        print(
            f"concurrency {c:4d}: {r['rows_per_s']:7.0f} rows/s, bound {r['bound']:7.0f} "
            f"({r['ratio']:.0%}), server latency p50 {r['latency_p50_ms']:.1f} ms "
            f"p99 {r['latency_p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
