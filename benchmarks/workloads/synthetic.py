"""Synthetic workloads with no I/O: the pipeline's own cost per row and per chunk.

The fetch function makes a chunk of identifiable rows (:class:`~benchmarks.data.RowSource`)
and returns it; everything else is the pipeline. Every pipeline runs ``concurrency`` fetchers
(tasks, threads or worker processes) and delivers batches of exactly ``batch_size`` rows.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..ablations import feed_runner, variant_of
from ..checks import BatchChecker, BlobSpec
from ..data import RowSource, RowSpec, Streams
from ..pipelines.source import KeyedSource, Row
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Target, Workload
from .bounds import copy_bound, fetch_copy_bound

__all__ = ["SyntheticWorkload"]

# How long a fetcher naps when the benchmark is draining and there is nothing to fetch,
# so that idle fetchers do not spin while the last batches are collected.
DRAIN_NAP_S = 0.002
BLOBS = ("data",)


def worker_rows(
    spec: RowSpec, streams: Streams, seed: int, worker: int, workers: int
) -> Iterator[Row]:
    """Rows for one DataLoader worker (stream ``worker + 1``; 0 in the main process)."""
    src = RowSource(spec, streams, stream=worker + 1, seed=seed)
    while (chunk := src.chunk()) is not None:
        for row in chunk:
            yield (row,)


def _keys(streams: Streams) -> Iterator[int]:
    for i in itertools.count():
        if streams.draining:
            return
        yield i


class SyntheticWorkload(Workload):
    """Chunks of ``spec.min_rows``–``spec.max_rows`` rows of ``spec.shape``, batched."""

    def __init__(
        self,
        *,
        name: str,
        title: str,
        description: str,
        spec: RowSpec,
        batch_size: int,
        concurrency: int,
        max_buffered_chunks: int,
        copy_bound: bool,
        seed_variants: Sequence[str] = (),
        keyed_variants: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.title = title
        self.description = description
        self.spec = spec
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_buffered_chunks = max_buffered_chunks
        self.copy_bound = copy_bound
        self.seed_variants = tuple(seed_variants)
        self.keyed_variants = tuple(keyed_variants)

    # -- configurations ------------------------------------------------------------------------

    @property
    def seed_label(self) -> str:
        return f"asyncfeed (async for, {self.concurrency} async fetchers)"

    @property
    def keyed_label(self) -> str:
        return f"asyncfeed from_keys (async fetch_one, concurrency {self.concurrency})"

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        c = self.concurrency
        m = self.max_buffered_chunks

        def spec(pipeline: str, label: str, primary: bool = False, **params: Any) -> RunSpec:
            return RunSpec(self.name, pipeline, label, params, phases, primary=primary)

        seed = spec("asyncfeed", self.seed_label, True, mode="async")
        keyed = spec("asyncfeed", self.keyed_label, mode="async", keyed=True)
        # Each variant right after the row it varies: neighbours in time share the load.
        out = [
            seed,
            *(variant_of(seed, v) for v in self.seed_variants),
            keyed,
            *(variant_of(keyed, v) for v in self.keyed_variants),
            spec("asyncfeed", f"asyncfeed (get() from a thread, {c} async fetchers)", mode="sync"),
            spec("data_workers", f"asyncfeed data_workers API ({c} fetcher threads, queue {m})"),
            spec(
                "asyncfeed",
                f"asyncfeed processes=2 (fork, {c} async fetchers)",
                mode="async",
                processes=2,
            ),
            spec("classic", f"classic threads ({c} fetcher threads, queue {m})"),
            spec("dataloader", "DataLoader (num_workers=0)", num_workers=0),
            spec("dataloader", f"DataLoader (num_workers={c})", num_workers=c),
            spec("torchdata", f"torchdata.nodes ParallelMapper ({c} threads)"),
            spec("spdl", f"SPDL (pipe concurrency={c}, async fetch)"),
        ]
        if self.copy_bound:
            out.append(spec("bound", "bound: single-thread np.copyto"))
        out.append(spec("bound", "bound: single-thread fetch + np.copyto", fetch=True))
        return out

    def checker(self, spec: RunSpec) -> BatchChecker:
        return BatchChecker([BlobSpec(self.spec.dtype, self.spec.shape)], self.batch_size)

    # -- pipelines -----------------------------------------------------------------------------

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        c = self.concurrency
        kind = spec.pipeline
        if kind == "asyncfeed":
            from ..pipelines.asyncfeed_pipe import FeedAsyncRunner, FeedSyncRunner

            processes = spec.params.get("processes")
            if processes:
                make = functools.partial(self._make_procs_feed, streams, processes)
                note = "fetchers in worker processes; chunks carried back (socket or ring)"
                return FeedAsyncRunner(streams, make, note=note)
            if spec.params.get("keyed"):
                make = functools.partial(self._make_keyed_feed, streams)
                note = "Feed.from_keys(endless keys, async fetch_one), one chunk per key"
            else:
                make = functools.partial(self._make_feed, streams)
                note = "consumer on the feed's event loop"
                if spec.params.get("mode") == "sync":
                    note = "private loop thread, get() per batch"
                    return FeedSyncRunner(streams, make, note=note)
            return feed_runner(spec, make, lambda m: FeedAsyncRunner(streams, m, note=note))
        if kind == "data_workers":
            from ..pipelines.asyncfeed_pipe import DataWorkersRunner

            return DataWorkersRunner(
                streams,
                BLOBS,
                self._sync_fetch_fun(streams),
                batch_size=self.batch_size,
                num_worker_threads=c,
                max_buffered_batches=self.max_buffered_chunks,
            )
        if kind == "classic":
            from ..pipelines.classic_pipe import ClassicRunner

            return ClassicRunner(streams, functools.partial(self._make_classic, streams))
        if kind == "dataloader":
            from ..pipelines.dataloader import DataLoaderRunner

            rows = functools.partial(worker_rows, self.spec, streams, 0)
            return DataLoaderRunner(
                streams, rows, batch_size=self.batch_size, num_workers=spec.params["num_workers"]
            )
        if kind == "torchdata":
            from ..pipelines.torchdata_nodes import TorchdataRunner

            src = self._keyed(streams)
            return TorchdataRunner(
                streams,
                src.keys,
                src.fetch_rows,
                batch_size=self.batch_size,
                num_workers=c,
                unbatch=True,
                note="ParallelMapper threads; chunks unbatched to rows, Batcher re-batches",
            )
        if kind == "spdl":
            from ..pipelines.spdl_pipe import SpdlRunner

            src = self._keyed(streams)
            return SpdlRunner(
                streams,
                src.keys,
                [(src.afetch_rows, c)],
                batch_size=self.batch_size,
                disaggregate=True,
                num_threads=c,
                note="async fetch; chunks disaggregated to rows, aggregate(n) + np.stack",
            )
        raise Unavailable(f"no pipeline {kind!r} in workload {self.name}")

    def _make_feed(self, streams: Streams) -> Any:
        import asyncfeed as af

        src = RowSource(self.spec, streams)

        async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
            chunk = src.chunk()
            if chunk is None:
                await asyncio.sleep(DRAIN_NAP_S)
                return None
            return [chunk]

        return af.Feed(
            fetch,
            blobs=list(BLOBS),
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            max_buffered_chunks=self.max_buffered_chunks,
            log_interval=None,
        )

    def _make_keyed_feed(self, streams: Streams) -> Any:
        """``Feed.from_keys`` over endless keys (they end when the benchmark drains), with an
        ``async def fetch_one(key)`` returning one chunk: the keyed configuration."""
        import asyncfeed as af

        src = RowSource(self.spec, streams)

        async def fetch_one(key: int) -> list[np.ndarray] | None:
            chunk = src.chunk()
            return None if chunk is None else [chunk]

        return af.Feed.from_keys(
            _keys(streams),
            fetch_one,
            blobs=list(BLOBS),
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            max_buffered_chunks=self.max_buffered_chunks,
            log_interval=None,
        )

    def _make_procs_feed(self, streams: Streams, processes: int) -> Any:
        """The same feed with its fetchers in forked worker processes, one stream each."""
        import asyncfeed as af

        spec = self.spec
        state: dict[str, RowSource] = {}

        def worker_init(index: int) -> None:
            state["src"] = RowSource(spec, streams, stream=1 + index)

        async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
            chunk = state["src"].chunk()
            if chunk is None:
                await asyncio.sleep(DRAIN_NAP_S)
                return None
            return [chunk]

        return af.Feed(
            fetch,
            blobs=list(BLOBS),
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            max_buffered_chunks=self.max_buffered_chunks,
            log_interval=None,
            processes=processes,
            start_method="fork",
            worker_init=worker_init,
        )

    def _sync_fetch_fun(self, streams: Streams) -> Any:
        src = RowSource(self.spec, streams)

        def fetch_fun(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
            chunk = src.chunk()
            if chunk is None:
                time.sleep(DRAIN_NAP_S)
                return None
            return [chunk]

        return fetch_fun

    def _make_classic(self, streams: Streams) -> Any:
        from ..classic import ClassicInput

        return ClassicInput(
            BLOBS,
            self._sync_fetch_fun(streams),
            self.batch_size,
            num_worker_threads=self.concurrency,
            max_buffered_batches=self.max_buffered_chunks,
        )

    def _keyed(self, streams: Streams) -> KeyedSource:
        src = RowSource(self.spec, streams)

        def fetch(key: Any) -> list[np.ndarray] | None:
            chunk = src.chunk()
            return None if chunk is None else [chunk]

        async def afetch(key: Any) -> list[np.ndarray] | None:
            return fetch(key)

        return KeyedSource(
            blobs=BLOBS,
            batch_size=self.batch_size,
            keys=functools.partial(_keys, streams),
            fetch=fetch,
            afetch=afetch,
            worker_rows=functools.partial(worker_rows, self.spec, streams, 0),
        )

    # -- the copy bound ------------------------------------------------------------------------

    def measure(self, spec: RunSpec) -> dict[str, Any]:
        """Rows/s of copying the same chunks into batch buffers with ``np.copyto``, one thread.

        The chunks are made once (more than the caches hold) and copied round-robin into a
        ring of preallocated batch buffers: a rebatcher with no overhead at all.
        """
        if spec.pipeline != "bound":
            return super().measure(spec)
        if spec.params.get("fetch"):
            return fetch_copy_bound(self.spec, self.batch_size, spec.phases)
        return copy_bound(self.spec, self.batch_size, spec.phases)

    # -- targets -------------------------------------------------------------------------------

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        return []
