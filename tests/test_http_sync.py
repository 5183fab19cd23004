"""HttpFetcher from synchronous code and across processes: a session per loop, pickling."""

from __future__ import annotations

import pickle
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.service import synthetic_image


@pytest.fixture
def served_pngs() -> Iterator[str]:
    """``python -m asyncfeed serve-images`` in a child process: 4 PNGs of 16x16."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncfeed",
            "serve-images",
            "--count=4",
            "--size=16",
            "--format=png",
            "--latency-ms=0",
            "--error-rate=0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            match = re.search(r"at (http://\S+)", proc.stdout.readline())
            assert match is not None
            yield match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.timeout(30)
def test_a_started_feed_opens_its_session_on_the_private_loop(served_pngs: str) -> None:
    fetcher = af.HttpFetcher()
    keys = [(served_pngs.format(i=i), i) for i in range(8)]
    feed = af.Feed.from_keys(
        keys, fetcher, blobs=["data", "label"], batch_size=4, ordered=True, log_interval=None
    )
    feed.start()
    try:
        first = feed.get(timeout=10)
        session = fetcher.session
        assert session is not None and not session.closed
        second = feed.get(timeout=10)
    finally:
        feed.stop()
    assert session.closed and fetcher.session is None
    data = np.concatenate([first["data"], second["data"]])
    assert all(np.array_equal(data[i], synthetic_image(i % 4, 16)) for i in range(8))
    assert np.concatenate([first["label"], second["label"]]).tolist() == list(range(8))


def test_fetchers_pickle_their_configuration_only() -> None:
    http = af.HttpFetcher(image=af.ImageOptions(size=(8, 8)), retry=af.Retry(attempts=2))
    back = pickle.loads(pickle.dumps(http))
    assert back.session is None and not back.is_open and back.host_stats() == {}
    assert repr(back) == repr(http)
    files = pickle.loads(pickle.dumps(af.FileFetcher(arrays="chunk")))
    assert "arrays='chunk'" in repr(files) and not files.is_open
