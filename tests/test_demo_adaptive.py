"""``python -m asyncfeed demo --adaptive``: the host limit converges on a throttling service."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.test_cli import check_summary


@pytest.mark.timeout(90)
def test_demo_adaptive_shows_the_host_limit_converging() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--adaptive", "--seconds", "4"],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    table = check_summary(proc.stdout)
    path = re.fullmatch(r"([\d →…]+) \((\w+)\); the service allows 16 at once", table["host limit"])
    assert path is not None, table["host limit"]
    assert "→" in path.group(1)  # it moved
    assert 12 <= int(path.group(1).split()[-1]) <= 20  # and ended near what the service allows
    assert re.fullmatch(r"[\d,]+ requests answered 429", table["throttled"])
    assert table["skipped"].startswith("0 keys")  # throttling cost time, not keys
    assert re.search(r"limit=\d+", proc.stderr)  # on the progress bar
    feed = re.fullmatch(r"(\d+) fetches \(([\w-]+)\)", table["feed limit"])  # the feed's own
    assert feed is not None and 1 <= int(feed.group(1)) <= 64, table["feed limit"]
