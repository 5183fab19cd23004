"""The http workload's pipelines: each with the shared fetch, and each with its own path.

*Same fetch* (like for like, :mod:`benchmarks.shared_fetch`): async pipelines call
:class:`~benchmarks.shared_fetch.AsyncFetch` (one aiohttp session and decode pool per loop),
thread and process pipelines call :class:`~benchmarks.shared_fetch.SyncFetch` (one
keep-alive ``http.client`` connection per thread, decode on that thread):

- asyncfeed: ``Feed.from_keys(keys, AsyncChunks(C), concurrency=C)``, in-process, with
  ``processes=2`` (spawned workers, C / 2 fetches in flight in each) and with
  ``workers=RayActors(2)`` (two Ray actors on a local Ray the feed starts, C / 2 each);
- classic threads: C fetcher threads, ``fetch_fun`` = ``SyncFetch.chunk``;
- DataLoader: C worker processes (up to 64), each iterating its share of the keys through
  ``SyncFetch``, rows batched by ``default_collate``;
- torchdata.nodes: ``ParallelMapper(SyncFetch, num_workers=C, method="thread")``;
- SPDL: ``pipe(AsyncFetch(C), concurrency=C)`` on SPDL's event loop.

*Own path* (each library's best out-of-the-box equivalent): asyncfeed's product
``HttpFetcher`` (aiohttp, retries, size and content-type checks, per-host stats, its decode
pool), in-process and with ``processes=2``; DataLoader workers and torchdata.nodes threads
with ``urllib.request`` (the standard library's client: a new connection per request);
SPDL's documented shape, an async aiohttp download stage then a decode stage on its thread
pool. Every path decodes with the same :func:`~benchmarks.shared_fetch.decode`.
"""

from __future__ import annotations

import functools
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..ablations import feed_runner
from ..data import Streams
from ..runner import Runner
from ..shared_fetch import AsyncChunks, AsyncFetch, Row, SyncFetch, connector_settings, decode
from ..spec import RunSpec, Unavailable

__all__ = ["BATCH", "BLOBS", "Keys", "build"]

BATCH = 32
BLOBS = ("image", "label")
DRAIN_NAP_S = 0.002
SPDL_DECODE_THREADS = 4

# keys(streams, template, stream=0, start=0, step=1) -> iterator of (url, row id)
Keys = Callable[..., Iterator[tuple[str, int]]]


def urllib_row(key: tuple[str, int]) -> Row:
    """GET with ``urllib.request`` (a new connection each time), decode: one row."""
    url, ident = key
    with urllib.request.urlopen(url, timeout=30) as resp:
        data = resp.read()
    return decode(data, url), np.int64(ident)


def worker_rows(
    keys: Keys,
    fetch: Callable[[tuple[str, int]], Row],
    streams: Streams,
    template: str,
    worker: int,
    workers: int,
) -> Iterator[Row]:
    """One DataLoader worker's rows: its share of the keys, fetched one at a time."""
    share = keys(streams, template, stream=worker + 1, start=max(worker, 0), step=max(workers, 1))
    for key in share:
        yield fetch(key)


class _AiohttpGet:
    """SPDL's own download stage: one aiohttp session, created on SPDL's event loop."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._session: Any = None

    async def __call__(self, key: tuple[str, int]) -> tuple[bytes, str, int]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**connector_settings(self._limit))
            )
        url, ident = key
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            data = await resp.read()
        return data, url, ident


def _decode_item(item: tuple[bytes, str, int]) -> Row:
    data, url, ident = item
    return decode(data, url), np.int64(ident)


def build(spec: RunSpec, streams: Streams, keys: Keys) -> Runner:
    """The runner of an http ``spec`` (in the measuring process).

    Raises:
        Unavailable: no such pipeline, or it cannot run here.
    """
    c = int(spec.params["concurrency"])
    template = str(spec.params["url_template"])
    same = spec.params.get("fetch", "same") == "same"
    kind = spec.pipeline
    if kind == "asyncfeed":
        return _asyncfeed(spec, streams, keys, c, template, same)
    if kind == "classic" and same:
        return _classic(streams, keys, c, template)
    if kind == "dataloader":
        from ..pipelines.dataloader import DataLoaderRunner

        fetch: Callable[[tuple[str, int]], Row] = SyncFetch() if same else urllib_row
        how = "SyncFetch (http.client keep-alive)" if same else "urllib.request"
        return DataLoaderRunner(
            streams,
            functools.partial(worker_rows, keys, fetch, streams, template),
            batch_size=BATCH,
            num_workers=int(spec.params["num_workers"]),
            note=f"one worker process per request in flight, {how} + decode",
        )
    if kind == "torchdata":
        from ..pipelines.torchdata_nodes import TorchdataRunner

        how = "SyncFetch (http.client keep-alive)" if same else "urllib.request"
        return TorchdataRunner(
            streams,
            functools.partial(keys, streams, template),
            SyncFetch() if same else urllib_row,
            batch_size=BATCH,
            num_workers=c,
            unbatch=False,
            note=f"ParallelMapper threads, {how} + decode",
        )
    if kind == "spdl":
        from ..pipelines.spdl_pipe import SpdlRunner

        if same:
            return SpdlRunner(
                streams,
                functools.partial(keys, streams, template),
                [(AsyncFetch(c), c)],
                batch_size=BATCH,
                disaggregate=False,
                num_threads=SPDL_DECODE_THREADS,
                note="pipe(AsyncFetch, concurrency=C) on SPDL's loop",
            )
        decoders = min(c, SPDL_DECODE_THREADS)
        return SpdlRunner(
            streams,
            functools.partial(keys, streams, template),
            [(_AiohttpGet(c), c), (_decode_item, decoders)],
            batch_size=BATCH,
            disaggregate=False,
            num_threads=decoders,
            note=f"aiohttp download stage (concurrency C), decode stage ({decoders} threads)",
        )
    raise Unavailable(f"no pipeline {kind!r} ({spec.params.get('fetch')}) in workload http")


def _asyncfeed(
    spec: RunSpec, streams: Streams, keys: Keys, c: int, template: str, same: bool
) -> Runner:
    from ..pipelines.asyncfeed_pipe import FeedAsyncRunner

    processes = spec.params.get("processes")
    actors = spec.params.get("ray_actors")
    if same:
        fetch_one: Any = AsyncChunks(c)
        note = "from_keys(AsyncChunks): shared aiohttp session + decode pool per loop"
    else:
        from asyncfeed.fetchers.http import HttpFetcher

        fetch_one = HttpFetcher()
        note = "from_keys(HttpFetcher): aiohttp, retries, checks, host stats, decode pool"
    if processes:
        note += f"; processes={processes} (spawn)"
    if actors:
        note += f"; RayActors({actors}) on a local Ray the feed starts"

    def make_feed() -> Any:
        import asyncfeed as af

        extra: dict[str, Any] = {"processes": processes} if processes else {}
        if actors:
            extra["workers"] = af.RayActors(actors)
        return af.Feed.from_keys(
            keys(streams, template),
            fetch_one,
            blobs=list(BLOBS),
            batch_size=BATCH,
            concurrency=c,
            log_interval=None,
            **extra,
        )

    cleanup = fetch_one.aclose_all if same else None
    return feed_runner(
        spec, make_feed, lambda make: FeedAsyncRunner(streams, make, note=note, cleanup=cleanup)
    )


def _classic(streams: Streams, keys: Keys, c: int, template: str) -> Runner:
    from ..classic import ClassicInput
    from ..pipelines.classic_pipe import ClassicRunner

    it = keys(streams, template)
    lock = threading.Lock()
    fetching = [0]  # fetch calls in progress: the drain waits for them
    fetch = SyncFetch()

    def fetch_fun(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
        with lock:
            key = next(it, None)
            fetching[0] += key is not None
        if key is None:
            time.sleep(DRAIN_NAP_S)
            return None
        try:
            return fetch.chunk(key)
        finally:
            with lock:
                fetching[0] -= 1

    def make_input() -> ClassicInput:
        return ClassicInput(BLOBS, fetch_fun, BATCH, num_worker_threads=c)

    runner = ClassicRunner(streams, make_input, fetching=lambda: fetching[0])
    runner.note = "C fetcher threads, SyncFetch (http.client keep-alive) + decode"
    return runner
