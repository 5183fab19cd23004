"""FileFetcher: images, .npy and .npz files, directory walks, and errors naming the path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import jpeg_bytes, png_bytes

pytestmark = pytest.mark.timeout(20)


async def collect(keys: Any, fetcher: af.FileFetcher, blobs: Any, **kw: Any) -> list[af.Batch]:
    feed = af.Feed.from_keys(keys, fetcher, blobs=blobs, log_interval=None, **kw)
    async with feed:
        return [batch async for batch in feed]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a/0.png, a/1.png, a/b/2.png, c.jpg and a stray text file."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, rel in enumerate(["a/0.png", "a/1.png", "a/b/2.png"]):
        (tmp_path / rel).write_bytes(png_bytes(synthetic_image(i, 16)))
    (tmp_path / "c.jpg").write_bytes(jpeg_bytes(synthetic_image(3, 16)))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_directory_walk_is_lazy_depth_first_and_filtered(tree: Path) -> None:
    walk = af.iter_files(tree)
    assert next(walk) == str(tree / "a" / "0.png")
    rest = [os.path.relpath(p, tree) for p in walk]
    assert rest == ["a/1.png", "a/b/2.png", "c.jpg"]


async def test_images_from_a_walked_directory_are_pixel_exact(tree: Path) -> None:
    keys = af.iter_files(tree, suffixes=[".png"])
    batches = await collect(keys, af.FileFetcher(), ["data"], batch_size=3, ordered=True)
    (batch,) = batches
    for i in range(3):
        assert np.array_equal(batch["data"][i], synthetic_image(i, 16))


async def test_labelled_records_and_resizing(tree: Path) -> None:
    keys = [(tree / "a" / "0.png", 1), {"path": str(tree / "c.jpg"), "label": 2}]
    fetcher = af.FileFetcher(image=af.ImageOptions(size=(8, 8)))
    (batch,) = await collect(keys, fetcher, ["data", "label"], batch_size=2, ordered=True)
    assert batch["data"].shape == (2, 8, 8, 3)
    assert batch["label"].tolist() == [1, 2]


async def test_npy_files_are_rows_or_chunks(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.full((2, 5), i, np.float32))
    paths = sorted(str(p) for p in tmp_path.glob("*.npy"))
    (rows,) = await collect(paths, af.FileFetcher(), ["x"], batch_size=3, ordered=True)
    assert rows["x"].shape == (3, 2, 5) and rows["x"][:, 0, 0].tolist() == [0, 1, 2]
    labelled = [(p, 9) for p in paths]
    fetcher = af.FileFetcher(arrays="chunk")
    (chunks,) = await collect(labelled, fetcher, ["x", "label"], batch_size=6, ordered=True)
    assert chunks["x"].shape == (6, 5) and chunks["x"][:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert chunks["label"].tolist() == [9] * 6


async def test_npz_arrays_map_onto_blobs_by_name(tmp_path: Path) -> None:
    for i in range(2):
        np.savez(tmp_path / f"{i}.npz", data=np.full((4, 3), i, np.int32), target=np.arange(4) + i)
    paths = sorted(str(p) for p in tmp_path.glob("*.npz"))
    fetcher = af.FileFetcher(arrays="chunk")
    batches = await collect(paths, fetcher, ["data", "target"], batch_size=8, ordered=True)
    assert batches[0]["data"].shape == (8, 3)
    assert batches[0]["target"].tolist() == [0, 1, 2, 3, 1, 2, 3, 4]
    (one,) = await collect(
        [(paths[1], 5)], af.FileFetcher(), ["data", "target", "label"], batch_size=1
    )
    assert one["data"].shape == (1, 4, 3) and one["label"].tolist() == [5]


async def test_a_missing_file_names_its_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.png")
    with pytest.raises(af.FetchError, match=rf"^cannot read {path}: No such file or directory$"):
        await collect([path], af.FileFetcher(), ["data"], batch_size=1)


async def test_an_unreadable_path_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(af.FetchError, match=rf"^cannot read {tmp_path}: Is a directory$"):
        await collect([str(tmp_path)], af.FileFetcher(), ["data"], batch_size=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_a_file_without_read_permission_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(png_bytes(synthetic_image(0, 8)))
    path.chmod(0)
    with pytest.raises(af.FetchError, match=rf"^cannot read {path}: Permission denied$"):
        await collect([str(path)], af.FileFetcher(), ["data"], batch_size=1)


async def test_bad_contents_raise_decode_error_naming_the_path(tmp_path: Path) -> None:
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"\x93NUMPY garbage")
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    for path in (bad_npy, bad_png):
        with pytest.raises(af.DecodeError, match=rf"^cannot (load|decode) {path}: ") as info:
            await collect([str(path)], af.FileFetcher(), ["data"], batch_size=1)
        assert info.value.source == str(path) and info.value.key == str(path)


async def test_files_over_max_bytes_are_refused(tree: Path) -> None:
    path = str(tree / "c.jpg")
    with pytest.raises(af.FetchError, match=rf"^cannot read {path}: larger than max_bytes=10$"):
        await collect([path], af.FileFetcher(max_bytes=10), ["data"], batch_size=1)


async def test_max_errors_skips_missing_files(tree: Path) -> None:
    keys = [str(tree / "a" / "0.png"), str(tree / "gone.png"), str(tree / "a" / "1.png")]
    feed = af.Feed.from_keys(
        keys, af.FileFetcher(), blobs=["data"], batch_size=2, max_errors=1, log_interval=None
    )
    async with feed:
        rows = sum([b.rows async for b in feed])
    assert rows == 2 and feed.stats().fetch_errors == 1


def test_file_fetcher_is_validated() -> None:
    with pytest.raises(af.ConfigError, match=r"^arrays must be 'row' or 'chunk', got 'rows'$"):
        af.FileFetcher(arrays="rows")  # type: ignore[arg-type]
    with pytest.raises(af.ConfigError, match=r"^image must be an ImageOptions, got 3$"):
        af.FileFetcher(image=3)  # type: ignore[arg-type]
    with pytest.raises(af.ConfigError, match=r"^threads must be an int >= 1, got 0$"):
        af.FileFetcher(threads=0)
