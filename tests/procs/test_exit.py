"""``processes=N`` when the feed's process ends badly: killed, or its loop ends unclosed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

ORPHAN_SCRIPT = """
import asyncio
import asyncfeed as af
from tests import procs_fetchers as pf

async def main():
    feed = af.Feed(pf.block_loop, blobs=["ids", "x", "pid"], batch_size=1, concurrency=2,
                   processes=2, log_interval=None)
    async with feed:
        pids = set()
        while len(pids) < 2:
            pids |= set((await anext(feed))["pid"].tolist())
        print(*sorted(pids), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_workers_do_not_outlive_a_killed_feed_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            pids = [int(p) for p in parent.stdout.readline().split()]
            workers = [psutil.Process(pid) for pid in pids]
            assert len(workers) == 2 and all(w.ppid() == parent.pid for w in workers)
        finally:
            parent.kill()  # the workers' event loops are blocked: only the kernel can tell them
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive and len(gone) == 2


UNCLOSED_SCRIPT = """
import asyncio, multiprocessing, os
import asyncfeed as af
from tests import procs_fetchers as pf

async def main():
    feed = af.Feed(pf.block_loop, blobs=["ids", "x", "pid"], batch_size=1, concurrency=2,
                   processes=2, log_interval=None)
    await feed.__aenter__()
    pids = set()
    while len(pids) < 2:
        pids |= set((await anext(feed))["pid"].tolist())
    print(*sorted(pids), flush=True)
    return feed  # never closed: asyncio.run cancels the feed's tasks on the way out

feed = asyncio.run(main())
print(len(multiprocessing.active_children()), flush=True)
"""


def test_a_loop_that_ends_without_closing_the_feed_still_reaps_its_workers() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", UNCLOSED_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pids_line, children_line = done.stdout.splitlines()
    assert children_line == "0"
    for pid in map(int, pids_line.split()):
        assert not psutil.pid_exists(pid)
