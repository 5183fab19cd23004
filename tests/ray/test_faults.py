"""``RayActors`` under faults: killed actors, lost nodes, restarts, error budgets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import ray

import asyncfeed as af
from tests.conftest import check_accounting
from tests.ray import fetchers
from tests.ray.support import FETCH, RayCluster, actor_named, alive, feed_actors, held_refs, kill

pytestmark = [pytest.mark.ray, pytest.mark.timeout(90)]

KEYS = range(200)


def _feed(source: str, fn: Any, **kw: Any) -> af.Feed:
    workers = af.RayActors(2, resources={FETCH: 0.01}, max_restarts=kw.pop("max_restarts", 0))
    opts: dict[str, Any] = {
        "blobs": ["ids", "node"],
        "batch_size": 8,
        "concurrency": 8,
        "source": source,
        "workers": workers,
        "log_interval": None,
    }
    return af.Feed.from_keys(KEYS, fn, **(opts | kw))


@pytest.fixture
def probe() -> Iterator[Any]:
    """A :class:`~tests.ray.fetchers.Probe` on the head node, killed after the test."""
    handle = fetchers.Probe.remote()  # type: ignore[attr-defined]
    yield handle
    ray.kill(handle)


def _held_by(message: str) -> list[int]:
    """The keys an actor-lost message names."""
    listed = re.search(r"holding \d+ keys? \[([^\]]*)\]", message)
    assert listed is not None, message
    return [int(k) for k in listed.group(1).split(", ")]


def _describes(message: str, entry: dict[str, Any]) -> None:
    """The message names the actor's index, id, node (at 127.0.0.1) and pid."""
    node = entry["Address"]["NodeID"]
    actor = f"Ray actor 0 (id {entry['ActorID'][:12]}, node {node[:12]} at 127.0.0.1, pid "
    assert actor in message, message


async def _collect(feed: af.Feed, ids: list[int]) -> None:
    async for batch in feed:
        ids += batch["ids"].tolist()


async def test_killed_actor_fails_the_keys_it_held(probe: Any) -> None:
    feed = _feed("killed", fetchers.Blocking(probe))
    ids: list[int] = []
    async with feed:
        await probe.wait_for.remote(2)
        entry = kill("killed", 0)
        with pytest.raises(af.FetchError, match=r"^Ray actor 0 \(id ") as info:
            await _collect(feed, ids)
    message = str(info.value)
    _describes(message, entry)
    assert "of feed 'killed' was lost (ActorDiedError: " in message
    held = _held_by(message)
    assert set(await probe.seen.remote()) <= set(held)
    assert info.value.key in held
    assert not set(ids) & set(held)
    check_accounting(feed.stats())
    assert alive("killed") == []
    assert held_refs() == {}


async def test_killed_actor_keys_count_as_failed_within_max_errors(probe: Any) -> None:
    feed = _feed("budget", fetchers.Blocking(probe), max_errors=50)
    ids: list[int] = []
    async with feed:
        await probe.wait_for.remote(2)
        kill("budget", 0)
        await _collect(feed, ids)
    assert len(ids) == len(set(ids))
    missing = set(KEYS) - set(ids)
    assert set(await probe.seen.remote()) <= missing
    stats = feed.stats()
    assert stats.fetch_errors == len(missing) > 0
    assert stats.rows_delivered == len(ids) == len(KEYS) - len(missing)
    check_accounting(stats)


async def test_restarted_actor_gets_the_held_keys_again_exactly_once(probe: Any) -> None:
    feed = _feed("restart", fetchers.Blocking(probe), max_restarts=1)
    ids: list[int] = []
    async with feed:
        held = await probe.wait_for.remote(2)
        kill("restart", 0)
        await _collect(feed, ids)
    assert sorted(ids) == list(KEYS)  # the held keys too, each once
    assert set(held) <= set(ids)
    stats = feed.stats()
    assert (stats.rows_fetched, stats.rows_delivered, stats.fetch_errors) == (200, 200, 0)
    check_accounting(stats)
    names = sorted(feed_actors("restart"))
    assert [n.rsplit("-", 1)[1] for n in names] == ["0.1", "0.2", "1.1"]
    assert alive("restart") == []


async def test_feed_fails_once_every_actor_is_lost(probe: Any) -> None:
    feed = _feed("gone", fetchers.Blocking(probe, index=None), max_errors=1000)
    async with feed:
        await probe.wait_for.remote(4)
        kill("gone", 0)
        kill("gone", 1)
        with pytest.raises(
            af.FetchError, match=r"^every Ray actor of feed 'gone' is lost; the last: Ray actor"
        ):
            await _collect(feed, [])
    check_accounting(feed.stats())
    assert alive("gone") == []


@pytest.fixture
def restore_nodes(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """Give the cluster back two fetch nodes after a test removed one."""
    yield ray_cluster
    while len(ray_cluster.fetch_nodes()) < 2:
        ray_cluster.add_fetch_node()
    ray_cluster.cluster.wait_for_nodes()


@pytest.mark.parametrize("max_restarts", [0, 1])
async def test_lost_node_mid_run(restore_nodes: RayCluster, probe: Any, max_restarts: int) -> None:
    source = f"node{max_restarts}"
    feed = _feed(source, fetchers.Blocking(probe), max_restarts=max_restarts)
    ids: list[int] = []
    async with feed:
        await probe.wait_for.remote(2)
        _, entry = actor_named(source, 0)
        node = restore_nodes.fetch_nodes()[entry["Address"]["NodeID"]]
        restore_nodes.cluster.remove_node(node, allow_graceful=False)
        if max_restarts:
            await _collect(feed, ids)
        else:
            with pytest.raises(af.FetchError, match=r"^Ray actor [01] \(id ") as info:
                await _collect(feed, ids)
    stats = feed.stats()
    check_accounting(stats)
    if max_restarts:
        assert sorted(ids) == list(KEYS)
        assert (stats.rows_fetched, stats.fetch_errors) == (200, 0)
    else:  # actor 0, or actor 1 if Ray had placed it on the same node
        lost_node = entry["Address"]["NodeID"]
        assert f"node {lost_node[:12]} at 127.0.0.1, pid " in str(info.value)
        assert not set(ids) & set(_held_by(str(info.value)))
    assert alive(source) == []
    assert held_refs() == {}
    assert ray.is_initialized()
