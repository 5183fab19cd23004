"""Zero-copy views the consumer holds are never overwritten: not when the rebatcher reuses a
batch buffer, not when a worker process refills its ring, not across a stop and a new feed
of the same source (SPDL 0.8 recycled segments under live views and corrupted most items).

Rows are counter-based: a batch is intact when its ``x`` still equals its ``ids``.
"""

from __future__ import annotations

import asyncio
import mmap

import numpy as np
import pytest

import asyncfeed as af
from tests import procs_fetchers as pf
from tests.conftest import CounterSource
from tests.procs_support import array_root, no_leaks

pytestmark = pytest.mark.timeout(120)


def intact(batch: af.Batch) -> bool:
    ids = batch["ids"].astype(np.float32)
    x = batch["x"].reshape(len(ids), -1)
    return bool(np.array_equal(x, np.repeat(ids[:, None], x.shape[1], axis=1)))


async def test_held_batches_survive_buffer_reuse_across_a_restart(counter: CounterSource) -> None:
    """In one process: the rebatcher copies small chunks into recycled batch buffers."""

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(3)

    held: list[af.Batch] = []
    for _ in range(3):  # three feeds of the same source, one after the other
        feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2, source="v")
        async with feed:
            for i in range(400):  # far more batches than buffers are recycled
                batch = await anext(feed)
                if i % 50 == 0:
                    held.append(batch)  # kept while the feed goes on refilling buffers
                assert intact(batch)
        assert all(intact(b) for b in held)
    firsts = [int(b["ids"][0]) for b in held]
    assert len(set(firsts)) == len(firsts) == 24


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_held_ring_views_survive_refills_and_a_restart_of_the_workers() -> None:
    """Whole-batch chunks come back as views of the workers' rings, handed on uncopied."""
    held: list[af.Batch] = []
    with no_leaks():
        for _ in range(2):  # two feeds of the same source: new workers, new rings
            feed = af.Feed(
                pf.whole_batches,
                blobs=["ids", "x"],
                batch_size=16,
                concurrency=2,
                source="ring-views",
                workers=af.Processes(2, start_method="fork"),
            )
            async with feed:
                for i in range(300):  # 16 x 48 KiB batches: the ring is refilled many times
                    batch = await anext(feed)
                    assert intact(batch)
                    if i % 30 == 0:
                        root = array_root(batch["x"])  # a view of a worker's ring
                        assert isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)
                        held.append(batch)
            assert all(intact(b) for b in held)
        del batch, root
        assert all(intact(b) for b in held)
        assert len({int(b["ids"][0]) for b in held}) == len(held) == 20
        held.clear()  # the rings are unmapped once their last view is gone (no_leaks)
