"""``RayActors`` on a local multi-node cluster: every key once, where it was fetched, in order."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import ray

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from tests.conftest import check_accounting
from tests.ray import fetchers
from tests.ray.support import FETCH, RayCluster, alive, held_refs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(60)]

ON_FETCH_NODES = {FETCH: 0.01}


def _keyed(keys: Any, fn: Any, source: str, **kw: Any) -> af.Feed:
    opts: dict[str, Any] = {
        "blobs": ["ids", "node"],
        "batch_size": 16,
        "concurrency": 16,
        "source": source,
        "workers": af.RayActors(2, resources=ON_FETCH_NODES),
        "log_interval": None,
    }
    return af.Feed.from_keys(keys, fn, **(opts | kw))


async def _drain(feed: af.Feed) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    nodes: list[int] = []
    async with feed:
        async for batch in feed:
            ids += batch["ids"].tolist()
            nodes += batch["node"].tolist()
    return ids, nodes


async def test_every_key_once_fetched_on_the_fetch_nodes(ray_cluster: RayCluster) -> None:
    feed = _keyed(range(600), fetchers.tagged, "once")
    ids, nodes = await _drain(feed)
    assert sorted(ids) == list(range(600))
    tags = ray_cluster.node_tags()
    fetch_nodes = set(ray_cluster.fetch_nodes())
    seen = {tags[t] for t in nodes}
    assert seen <= fetch_nodes and len(seen) >= 2, (seen, fetch_nodes)
    stats = feed.stats()
    assert (stats.rows_fetched, stats.rows_delivered, stats.fetch_calls) == (600, 600, 600)
    check_accounting(stats)
    assert alive("once") == []
    assert held_refs() == {}


async def test_ordered_delivery_in_key_order(ray_cluster: RayCluster) -> None:
    feed = _keyed(range(300), fetchers.tagged, "ordered", ordered=True, batch_size=7)
    ids, _ = await _drain(feed)
    assert ids == list(range(300))


async def test_shards_split_the_keys_between_feeds(ray_cluster: RayCluster) -> None:
    keys = list(range(101))
    got = []
    for rank in range(3):
        feed = _keyed(keys, fetchers.tagged, f"shard{rank}", shard=(rank, 3))
        ids, _ = await _drain(feed)
        assert sorted(ids) == keys[rank::3]
        got += ids
    assert sorted(got) == keys


async def test_sync_fetcher_runs_on_the_actors_threads(ray_cluster: RayCluster) -> None:
    feed = _keyed(range(64), fetchers.tagged_sync, "sync")
    ids, nodes = await _drain(feed)
    assert sorted(ids) == list(range(64))
    assert set(nodes) <= set(ray_cluster.node_tags())


async def test_seed_style_workers_each_on_their_actor(ray_cluster: RayCluster) -> None:
    feed = af.Feed(
        fetchers.seeded,
        blobs=["ids", "node"],
        batch_size=8,
        concurrency=4,
        source="seeded",
        workers=af.RayActors(2, resources=ON_FETCH_NODES, keys_per_call=2),
        log_interval=None,
    )
    seen: dict[int, set[int]] = {}
    async with feed:
        for _ in range(20):
            batch = await anext(feed)
            for wid, node in zip(batch["ids"].tolist(), batch["node"].tolist(), strict=True):
                seen.setdefault(wid, set()).add(node)
    assert set(seen) == set(feed.worker_ids)
    assert all(len(nodes) == 1 for nodes in seen.values()), seen  # one actor per worker id
    check_accounting(feed.stats())
    assert alive("seeded") == []


async def test_worker_init_runs_once_in_every_actor(ray_cluster: RayCluster) -> None:
    probe = fetchers.Probe.remote()  # type: ignore[attr-defined]

    async def init(index: int) -> None:
        await probe.arrived.remote(index)

    workers = af.RayActors(3, resources=ON_FETCH_NODES, worker_init=init)
    feed = _keyed(range(30), fetchers.tagged, "init", workers=workers)
    ids, _ = await _drain(feed)
    assert sorted(ids) == list(range(30))
    assert sorted(await probe.seen.remote()) == [0, 1, 2]
    ray.kill(probe)


async def test_a_fetcher_exception_reaches_the_consumer_with_the_actors_traceback(
    ray_cluster: RayCluster,
) -> None:
    feed = _keyed(range(40), fetchers.fails_on_sevens, "raises")
    with pytest.raises(
        af.FetchError, match=r"^fetch failed in key (\d*7): ValueError: bad key \1$"
    ) as info:
        await _drain(feed)
    original = info.value.__cause__
    assert type(original) is ValueError
    assert isinstance(original.__cause__, af.RemoteTraceback)
    assert "fails_on_sevens" in original.__cause__.text
    assert alive("raises") == []


async def test_max_errors_skips_failed_keys(ray_cluster: RayCluster) -> None:
    feed = _keyed(range(100), fetchers.fails_on_sevens, "skips", max_errors=10)
    ids, _ = await _drain(feed)
    assert sorted(ids) == [k for k in range(100) if k % 10 != 7]
    stats = feed.stats()
    assert stats.fetch_errors == 10
    check_accounting(stats)


async def test_http_image_fetcher_on_actors(
    ray_cluster: RayCluster, png_service: af.ImageService
) -> None:
    records = png_service.records()
    feed = af.Feed.from_keys(
        records,
        af.HttpFetcher(),
        blobs=["data", "label"],
        batch_size=4,
        concurrency=8,
        ordered=True,
        source="http",
        workers=af.RayActors(2, resources=ON_FETCH_NODES),
        log_interval=None,
    )
    async with feed:
        batches = [b async for b in feed]
    data = np.concatenate([b["data"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches]).tolist()
    assert data.shape == (16, 32, 32, 3)
    assert labels == [png_service.label(i) for i in range(16)]
    assert np.array_equal(data[3], synthetic_image(3, 32))
    hosts = feed.stats().hosts
    assert sum(h["requests"] for h in hosts.values()) == 16, hosts
    assert alive("http") == []


async def test_a_fetcher_ray_cannot_send_fails_the_start() -> None:
    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        async def __call__(self, key: int) -> None:
            return None

    feed = _keyed(range(4), Locked(), "unsendable")
    with pytest.raises(
        af.FetchError, match=r"^starting the Ray actors of feed 'unsendable' failed: "
    ):
        await _drain(feed)
    assert alive("unsendable") == []


async def test_worker_init_failure_names_the_actor_and_its_node() -> None:
    def init(index: int) -> None:
        raise RuntimeError(f"no session in actor {index}")

    workers = af.RayActors(1, resources=ON_FETCH_NODES, worker_init=init)
    feed = _keyed(range(4), fetchers.tagged, "badinit", workers=workers)
    message = (
        r"^worker_init failed in Ray actor 0 \(id \w+, node \w+ at 127\.0\.0\.1, pid \d+\) "
        r"of feed 'badinit': RuntimeError: no session in actor 0$"
    )
    with pytest.raises(af.FetchError, match=message) as info:
        await _drain(feed)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert alive("badinit") == []
