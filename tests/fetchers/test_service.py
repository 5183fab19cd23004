"""ImageService: synthetic and folder images, injected latency and errors, counters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image
from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import jpeg_bytes

pytestmark = pytest.mark.timeout(20)


async def get(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.content_type, await resp.read()


async def test_png_images_equal_the_synthetic_source(png_service: af.ImageService) -> None:
    status, ctype, body = await get(png_service.url_template.format(i=5))
    assert (status, ctype) == (200, "image/png")
    assert body == png_service.body(5)
    assert np.array_equal(decode_image(body, af.ImageOptions(), "x"), synthetic_image(5, 32))
    assert png_service.label(21) == 5 and png_service.records(2)[1] == (
        png_service.url_template.format(i=1),
        1,
    )


async def test_numbers_past_the_count_are_404_and_url_lists_cycle(
    png_service: af.ImageService,
) -> None:
    template = png_service.url_template
    assert png_service.count == 16
    assert (await get(template.format(i=15)))[0] == 200
    status, _, body = await get(template.format(i=16))
    assert (status, body) == (404, b"no image number '16' (0 to 15)")
    assert (await get(template.format(i=300)))[0] == 404
    assert png_service.urls(18)[16:] == [template.format(i=0), template.format(i=1)]
    assert png_service.records(17)[16] == (template.format(i=0), 0)


async def test_synthetic_images_are_served_by_name_too(png_service: af.ImageService) -> None:
    assert png_service.names[:3] == ["0.png", "1.png", "2.png"] and len(png_service.names) == 16
    status, ctype, body = await get(png_service.file_url("7.png"))
    assert (status, ctype, body) == (200, "image/png", png_service.body(7))
    status, _, text = await get(png_service.file_url("16.png"))
    assert (status, text) == (404, b"no image named '16.png'")


async def test_jpeg_images_are_generated_at_start_up() -> None:
    async with af.ImageService(count=3, size=48) as svc:
        assert svc.url_template.endswith("/img/{i}.jpg") and len(svc.urls()) == 3
        status, ctype, body = await get(svc.urls()[2])
    assert (status, ctype) == (200, "image/jpeg")
    image = decode_image(body, af.ImageOptions(), "x")
    assert np.abs(image.astype(np.int16) - synthetic_image(2, 48)).mean() < 5


def test_classes_are_distinguishable() -> None:
    means = [synthetic_image(i, 32, classes=4).mean(axis=(0, 1)) for i in range(8)]
    assert np.allclose(means[0], means[4], atol=25) and not np.allclose(means[0], means[1], atol=5)


async def test_latency_is_injected_and_peak_recorded() -> None:
    async with af.ImageService(count=2, size=8, latency_ms=200) as svc:
        start = time.monotonic()
        await get(svc.urls()[0])
        assert time.monotonic() - start >= 0.19
        assert svc.requests == 1 and svc.peak_in_flight == 1 and svc.in_flight == 0


async def test_error_rate_answers_503_reproducibly() -> None:
    async def statuses(seed: int) -> list[int]:
        async with af.ImageService(count=2, size=8, error_rate=0.5, seed=seed) as svc:
            got = [(await get(svc.urls()[0]))[0] for _ in range(20)]
            assert svc.errors_injected == got.count(503)
            return got

    first = await statuses(1)
    assert set(first) == {200, 503}
    assert await statuses(1) == first


async def test_unknown_paths_get_404(png_service: af.ImageService) -> None:
    assert (await get(png_service.url + "/img/cat.png"))[0] == 404
    assert (await get(png_service.url + "/other"))[0] == 404


async def test_a_folder_is_served_by_index_and_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.jpg").write_bytes(jpeg_bytes(synthetic_image(1, 8)))
    (tmp_path / "a.txt").write_text("skipped")
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "c.jpg").write_bytes(jpeg_bytes(synthetic_image(2, 8)))
    nested = (tmp_path / "sub dir" / "c.jpg").read_bytes()
    async with af.ImageService(directory=tmp_path) as svc:
        assert svc.count == 2 and svc.url_template.endswith("/img/{i}")
        assert svc.names == ["b.jpg", "sub dir/c.jpg"]
        status, ctype, body = await get(svc.url_template.format(i=1))
        assert (status, ctype, body) == (200, "image/jpeg", nested)
        assert (await get(svc.url_template.format(i=2)))[0] == 404
        assert await get(svc.file_url("sub dir/c.jpg")) == (200, "image/jpeg", nested)
        assert (await get(svc.url + "/files/a.txt"))[0] == 404
        assert (await get(svc.url + "/files/../a.txt"))[0] == 404
        assert (await get(svc.url + "/files/sub%20dir/c.jpg"))[2] == nested
        status, _, index = await get(svc.url + "/")
        base = svc.url
    info = json.loads(index)
    assert status == 200 and info["names"] == ["b.jpg", "sub dir/c.jpg"]
    assert info["files_url"] == f"{base}/files/{{name}}" and info["count"] == 2


async def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(af.ConfigError, match=r"^no images found under "):
        async with af.ImageService(directory=tmp_path):
            pass


async def test_lifecycle_is_explicit() -> None:
    svc = af.ImageService(count=1, size=8)
    with pytest.raises(RuntimeError, match="not started"):
        _ = svc.url
    async with svc:
        with pytest.raises(RuntimeError, match="already started"):
            await svc.start()
    await svc.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        _ = svc.url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be >= 1, got 0"),
        ({"error_rate": 1.5}, "error_rate must be a number in [0, 1], got 1.5"),
        ({"latency_ms": -1}, "latency_ms must be a number >= 0, got -1"),
        ({"fmt": "gif"}, "fmt must be 'jpeg' or 'png', got 'gif'"),
    ],
)
def test_service_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.ImageService(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
