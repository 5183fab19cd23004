"""Helpers for the Ray tests: the session cluster's handle, and what Ray's state API says."""

from __future__ import annotations

import functools
from typing import Any

import ray

FETCH = "fetch"  # the worker nodes' resource
STORE_BYTES = 80 * 2**20  # each node's object store (Ray's minimum is 75 MiB)


class RayCluster:
    """The session's ``ray.cluster_utils.Cluster``: a head and its ``fetch`` worker nodes."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def add_fetch_node(self) -> Any:
        return self.cluster.add_node(
            num_cpus=2, resources={FETCH: 4}, object_store_memory=STORE_BYTES
        )

    def fetch_nodes(self) -> dict[str, Any]:
        """Worker nodes by node id (hex)."""
        return {node.node_id: node for node in self.cluster.worker_nodes}

    def node_tags(self) -> dict[int, str]:
        """The tag :func:`tests.ray.fetchers.node_tag` gives each live node -> node id."""
        from tests.ray.fetchers import node_tag

        return {node_tag(n["NodeID"]): n["NodeID"] for n in ray.nodes() if n["Alive"]}


def feed_actors(source: str) -> dict[str, dict[str, Any]]:
    """The actors of the feeds of ``source`` (by name), as Ray's state (the GCS) has them."""
    prefix = f"asyncfeed-{source}-"
    actors = ray._private.state.actors().values()
    return {a["Name"]: a for a in actors if a["Name"].startswith(prefix)}


def alive(source: str) -> list[str]:
    """Names of ``source``'s actors that are not dead (alive, pending, restarting)."""
    return sorted(n for n, a in feed_actors(source).items() if a["State"] != "DEAD")


def actor_named(source: str, index: int, incarnation: int = 1) -> tuple[str, dict[str, Any]]:
    """The one actor ``index.incarnation`` of ``source`` (name and state entry)."""
    found = [
        (n, a) for n, a in feed_actors(source).items() if n.endswith(f"-{index}.{incarnation}")
    ]
    assert len(found) == 1, feed_actors(source)
    return found[0]


def kill(source: str, index: int, incarnation: int = 1) -> dict[str, Any]:
    """``ray.kill`` actor ``index`` of ``source``; its state entry before the kill."""
    name, entry = actor_named(source, index, incarnation)
    ray.kill(ray.get_actor(name))
    return entry


def held_refs() -> dict[Any, Any]:
    """Object refs this process holds (Ray's reference table of the driver)."""
    worker: Any = ray._private.worker.global_worker  # Ray's private API: untyped
    return dict(worker.core_worker.get_all_reference_counts())


@functools.cache
def _state(address: str) -> Any:
    from ray._private.internal_api import get_state_from_address

    return get_state_from_address(address)


def store_stats() -> tuple[int, int, int]:
    """(bytes used, bytes of primary copies, bytes ever spilled) in every node's object store.

    Used counts every copy, pulled ones too (a zero-copy view pins its copy); primary
    copies are the ones the owner's references pin (Ray's memory API).
    """
    from ray._private.internal_api import get_memory_info_reply

    stats = get_memory_info_reply(_state(ray.get_runtime_context().gcs_address)).store_stats
    return (
        int(stats.object_store_bytes_used),
        int(stats.object_store_bytes_primary_copy),
        int(stats.spilled_bytes_total),
    )
