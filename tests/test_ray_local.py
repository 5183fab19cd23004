"""With no ``ray.init``, a ``RayActors`` feed starts a local Ray on loopback and stops it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, psutil
import numpy as np
import asyncfeed as af

async def fetch_one(key):
    return [np.array([key], np.int64)]

async def main():
    import sys
    feed = af.Feed.from_keys(range(100), fetch_one, blobs=["ids"], batch_size=10,
                             concurrency=8, workers=af.RayActors(2), log_interval=None)
    async with feed:
        ids = sorted(int(i) for b in [b async for b in feed] for i in b["ids"])
        import ray
        nodes = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert ids == list(range(100)), ids
    assert nodes == {"127.0.0.1"}, nodes
    assert not ray.is_initialized()
    left = [p.name() for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    print("left:", left)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_feed_starts_and_stops_its_own_local_ray_on_loopback() -> None:
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "left: []", out.stdout
