"""transform=fn(item, key) on the ready fetchers: where it runs, what it may return, how its
failures are reported, and that the feed still opens and closes the fetcher."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from tests.conftest import check_accounting
from tests.httpserver import PNG_SIZE, FaultServer, png_bytes

pytestmark = pytest.mark.timeout(30)


async def collect(keys: Any, fetcher: Any, blobs: list[str], **kw: Any) -> tuple[Any, af.Feed]:
    kw.setdefault("batch_size", 4)
    feed = af.Feed.from_keys(keys, fetcher, blobs=blobs, log_interval=None, ordered=True, **kw)
    async with feed:
        batches = [b async for b in feed]
    return batches, feed


def rows(batches: list[af.Batch], blob: str) -> np.ndarray:
    return np.concatenate([b[blob] for b in batches])


async def test_a_transform_runs_in_the_decode_pool_never_on_the_loop(
    fault_server: FaultServer,
) -> None:
    threads: list[str] = []
    loop_thread = threading.current_thread()

    def flip(image: np.ndarray, key: Any) -> np.ndarray:
        assert threading.current_thread() is not loop_thread
        threads.append(threading.current_thread().name)
        return np.ascontiguousarray(image[:, ::-1])

    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(10)]
    batches, feed = await collect(keys, af.HttpFetcher(transform=flip), ["data", "label"])
    data = rows(batches, "data")
    for i in range(10):
        assert np.array_equal(data[i], synthetic_image(i, PNG_SIZE)[:, ::-1])
    assert rows(batches, "label").tolist() == list(range(10))
    assert len(threads) == 10 and all(t.startswith("asyncfeed-http-decode") for t in threads)
    check_accounting(feed.stats())


async def test_the_transform_sees_the_image_as_image_options_made_it(
    fault_server: FaultServer,
) -> None:
    seen: list[tuple[tuple[int, ...], np.dtype[Any]]] = []

    def look(image: np.ndarray, key: Any) -> np.ndarray:
        seen.append((image.shape, image.dtype))
        return image

    options = af.ImageOptions(size=(8, 16), layout="CHW", normalize=(0.5, 0.25))
    fetcher = af.HttpFetcher(image=options, transform=look)
    await collect([fault_server.url("/png/0")], fetcher, ["data"], batch_size=1)
    assert seen == [((3, 8, 16), np.dtype(np.float32))]


async def test_a_mapping_becomes_blobs_and_the_keys_label_is_added(
    fault_server: FaultServer,
) -> None:
    def split(image: np.ndarray, key: Any) -> dict[str, np.ndarray]:
        return {"data": image, "mean": image.mean(axis=(0, 1), dtype=np.float32)}

    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(6)]
    fetcher = af.HttpFetcher(transform=split)
    batches, _ = await collect(keys, fetcher, ["data", "mean", "label"], batch_size=3)
    assert rows(batches, "mean").shape == (6, 3) and rows(batches, "label").tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    expected = synthetic_image(4, PNG_SIZE).mean(axis=(0, 1))
    assert np.allclose(rows(batches, "mean")[4], expected, atol=1e-3)


async def test_a_mappings_own_label_wins(fault_server: FaultServer) -> None:
    def relabel(image: np.ndarray, key: Any) -> dict[str, np.ndarray]:
        return {"data": image, "label": np.int64(key[1] * 100)}  # type: ignore[dict-item]

    def relabel_array(image: np.ndarray, key: Any) -> dict[str, np.ndarray]:
        return {"data": image, "label": np.asarray(key[1] * 100)}

    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(4)]
    with pytest.raises(af.FetchError, match=r"returned dict for http://.*; expected a numpy"):
        await collect(keys, af.HttpFetcher(transform=relabel), ["data", "label"])
    batches, _ = await collect(keys, af.HttpFetcher(transform=relabel_array), ["data", "label"])
    assert rows(batches, "label").tolist() == [0, 100, 200, 300]


async def test_returning_none_drops_the_key(fault_server: FaultServer) -> None:
    def odd_only(image: np.ndarray, key: Any) -> np.ndarray | None:
        return image if key[1] % 2 else None

    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(8)]
    batches, feed = await collect(keys, af.HttpFetcher(transform=odd_only), ["data", "label"])
    assert rows(batches, "label").tolist() == [1, 3, 5, 7]
    stats = feed.stats()
    assert stats.fetch_none == 4 and stats.rows_delivered == 4 and stats.fetch_errors == 0


class Boom(ValueError):
    pass


def fail_on_five(image: np.ndarray, key: Any) -> np.ndarray:
    if key[1] == 5:
        raise Boom("bad pixels")
    return image


async def test_a_transform_failure_stops_the_feed_naming_the_key(
    fault_server: FaultServer,
) -> None:
    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(8)]
    url = fault_server.url("/png/5")
    with pytest.raises(af.FetchError) as info:
        await collect(keys, af.HttpFetcher(transform=fail_on_five), ["data", "label"])
    assert str(info.value) == (f"transform fail_on_five failed on {url}: Boom: bad pixels")
    assert info.value.key == (url, 5) and isinstance(info.value.__cause__, Boom)


async def test_a_transform_failure_is_skipped_within_max_errors(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="asyncfeed"):
        batches, feed = await collect(
            keys, af.HttpFetcher(transform=fail_on_five), ["data", "label"], max_errors=1
        )
    assert rows(batches, "label").tolist() == [i for i in range(12) if i != 5]
    assert feed.stats().fetch_errors == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "transform fail_on_five failed on " + fault_server.url("/png/5") in logged


async def test_an_asyncfeed_error_from_a_transform_passes_with_the_key(
    fault_server: FaultServer,
) -> None:
    def refuse(image: np.ndarray, key: Any) -> np.ndarray:
        raise af.DecodeError("too dark", source="mine")

    url = fault_server.url("/png/1")
    with pytest.raises(af.DecodeError, match=r"^too dark$") as info:
        await collect([url], af.HttpFetcher(transform=refuse), ["data"])
    assert info.value.key == url


async def test_file_fetcher_transforms_images_and_arrays(tmp_path: Path) -> None:
    (tmp_path / "0.png").write_bytes(png_bytes(synthetic_image(0, 8)))
    np.save(tmp_path / "1.npy", np.arange(6, dtype=np.float32).reshape(2, 3))

    def describe(value: np.ndarray, key: Any) -> dict[str, np.ndarray]:
        return {"size": np.asarray(value.size), "kind": np.asarray(str(key[0]).endswith(".npy"))}

    keys = [(str(tmp_path / "0.png"), 7), (str(tmp_path / "1.npy"), 8)]
    fetcher = af.FileFetcher(transform=describe)
    (batch,), _ = await collect(keys, fetcher, ["size", "kind", "label"], batch_size=2)
    assert batch["size"].tolist() == [8 * 8 * 3, 6]
    assert batch["kind"].tolist() == [False, True] and batch["label"].tolist() == [7, 8]


async def test_file_fetcher_transform_of_chunk_files_returns_rows(tmp_path: Path) -> None:
    for i in range(2):
        np.save(tmp_path / f"{i}.npy", np.full((3, 2), i, np.int32))

    def double(value: np.ndarray, key: Any) -> np.ndarray:
        return value * 2

    paths = sorted(str(p) for p in tmp_path.glob("*.npy"))
    fetcher = af.FileFetcher(arrays="chunk", transform=double)
    (batch,), _ = await collect(paths, fetcher, ["x"], batch_size=6)
    assert batch["x"][:, 0].tolist() == [0, 0, 0, 2, 2, 2]


def test_reprs_name_the_transform() -> None:
    assert repr(af.HttpFetcher(transform=fail_on_five)).endswith(" transform=fail_on_five>")
    assert "transform=" not in repr(af.HttpFetcher())
    assert repr(af.FileFetcher(transform=fail_on_five)).endswith(" transform=fail_on_five>")


SCRIPT = """
import asyncio, sys
import numpy as np
import asyncfeed as af

def flip(image, key):
    return image[:, ::-1].copy()

keys = [(sys.argv[2].format(i=i % 16), i) for i in range(40)]

async def run_async():
    feed = af.Feed.from_keys(keys, af.HttpFetcher(transform=flip), blobs=["data", "label"],
                             batch_size=8, log_interval=None)
    async with feed:
        async for batch in feed:
            pass

def run_sync():
    feed = af.Feed.from_keys(keys, af.HttpFetcher(transform=flip), blobs=["data", "label"],
                             batch_size=8, log_interval=None)
    feed.start()
    for batch in feed:
        break  # leave early: stop() still closes the session
    feed.stop()

asyncio.run(run_async()) if sys.argv[1] == "async" else run_sync()
print("done")
"""


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_no_unclosed_session_at_exit_with_a_transform(
    png_service: af.ImageService, flavour: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-W",
        "error",
        "-c",
        textwrap.dedent(SCRIPT),
        flavour,
        png_service.url_template,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "done\n"
    assert "Unclosed" not in err.decode() and "Traceback" not in err.decode(), err.decode()
