"""``RayActors``: fetch and decode on Ray actors, batches and their order in this process.

Runs on one machine with no arguments::

    python examples/ray_feed.py

With no Ray running, the feed starts a local Ray instance (on 127.0.0.1 only) and shuts it
down when it stops. On a cluster, call ``ray.init(address="auto")`` first and place the
actors on your CPU nodes with ``RayActors(n, resources={"fetch": 1})``: see
``docs/scaling.md``. The fetcher and ``worker_init`` travel to the actors (Ray pickles them);
the ``HttpFetcher`` opens its session in each actor's own event loop.
"""

from __future__ import annotations

import asyncio
import os

import asyncfeed as af


def seed(actor_index: int) -> None:
    """Runs once in each actor before it fetches (sessions, seeds, logging)."""
    os.environ["EXAMPLE_ACTOR"] = str(actor_index)


def ray_nodes() -> list[str]:
    """The addresses of the Ray nodes the feed runs on (while it runs)."""
    import ray

    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]})


async def main() -> None:
    async with af.ImageService(count=64, size=64) as service:
        feed = af.Feed.from_keys(
            service.records(512),  # [(url, label), ...]
            af.HttpFetcher(),
            blobs=["data", "label"],
            batch_size=32,
            concurrency=32,
            ordered=True,  # key order is kept here, whichever actor fetched a key
            workers=af.RayActors(2, worker_init=seed, max_restarts=1),
            log_interval=None,
        )
        batches = 0
        async with feed:
            async for batch in feed:
                if batches == 0:
                    nodes = ray_nodes()
                    assert nodes == ["127.0.0.1"], nodes  # the local Ray keeps to loopback
                    print(f"Ray nodes at {nodes}; batch data {batch['data'].shape}")
                batches += 1
        stats = feed.stats()
        requests = sum(h["requests"] for h in stats.hosts.values())
        print(
            f"{stats.rows_delivered} images in {batches} batches from 2 Ray actors "
            f"({requests} requests)"
        )


if __name__ == "__main__":
    asyncio.run(main())
