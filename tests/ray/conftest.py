"""One local multi-node Ray cluster for the whole session, on 127.0.0.1 only.

A head with a ``trainer`` resource (this process's driver joins it) and two worker nodes
with a ``fetch`` resource; dashboard and usage stats off; small object stores. Ray reads
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is imported: ``0`` keeps every node, and this
driver, on loopback. The fixture asserts it: every node reports 127.0.0.1 and every socket
the cluster's processes listen on is a loopback one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import psutil
import pytest

ray = pytest.importorskip("ray")

from tests.ray.support import FETCH, STORE_BYTES, RayCluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the ``ray`` tests last: the session's cluster starts with the first of them and
    stops at the end, so it never runs beside the rest of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


def _listening(pids: set[int]) -> list[str]:
    """Addresses the given processes listen on (TCP)."""
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid in pids and conn.status == psutil.CONN_LISTEN and conn.laddr:
            out.append(str(conn.laddr.ip))
    return out


def assert_loopback_only(cluster: Any) -> None:
    """Every node of ``cluster`` and every socket its processes listen on is on loopback."""
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER is False, "Ray was imported before the env was set"
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}, nodes
    assert cluster.address.startswith("127.0.0.1:"), cluster.address
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    pids = {p.pid for p in psutil.Process().children(recursive=True)}
    addresses = set(_listening(pids))
    assert addresses, "found none of the cluster's listening sockets"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    from ray.cluster_utils import Cluster

    pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), pythonpath]))
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {"trainer": 1},
                "include_dashboard": False,
                "object_store_memory": STORE_BYTES,
                # A node removed by a test is found dead in ~1 s, not Ray's default ~15 s.
                "_system_config": {
                    "health_check_period_ms": 500,
                    "health_check_failure_threshold": 2,
                },
            },
        )
        handle = RayCluster(cluster)
        for _ in range(2):
            handle.add_fetch_node()
    finally:
        if pythonpath is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = pythonpath
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        assert_loopback_only(cluster)
        asyncio.run(_warm_up())  # Ray's driver threads start now, not in the first test
        yield handle
    finally:
        ray.shutdown()
        cluster.shutdown()


async def _warm_up() -> None:
    import asyncfeed as af
    from tests.ray import fetchers

    feed = af.Feed.from_keys(
        range(4),
        fetchers.tagged,
        blobs=["ids", "node"],
        batch_size=4,
        workers=af.RayActors(1, resources={FETCH: 0.01}),
        log_interval=None,
    )
    async with feed:
        [b async for b in feed]


@pytest.fixture(autouse=True)
def _on_the_cluster(request: pytest.FixtureRequest, ray_cluster: RayCluster) -> None:
    """Every test here runs on the session's cluster, and is marked ``ray``."""
    assert request.node.get_closest_marker("ray") is not None, "tests/ray needs the ray marker"
    assert ray.is_initialized()
