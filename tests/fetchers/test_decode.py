"""Image decoding: headers, exact PNG, JPEG tolerance, resizing, bombs, options."""

from __future__ import annotations

import io
import pickle
import resource

import numpy as np
import pytest
from PIL import Image

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image, image_size
from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import jpeg_bytes, jpeg_header_bomb, png_bytes, png_header_bomb

OPTS = af.ImageOptions()


def test_headers_give_format_and_size() -> None:
    rect = np.zeros((30, 50, 3), np.uint8)
    assert image_size(png_bytes(rect)) == ("png", 50, 30)
    assert image_size(jpeg_bytes(rect)) == ("jpeg", 50, 30)
    assert image_size(b"GIF89a...") is None
    with pytest.raises(ValueError, match="JPEG header ends before its frame header"):
        image_size(jpeg_bytes(rect)[:20])


def test_png_decodes_pixel_exact() -> None:
    src = synthetic_image(3, 40)
    out = decode_image(png_bytes(src), OPTS, "x.png")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, src)


def test_jpeg_decodes_within_tolerance() -> None:
    src = synthetic_image(4, 64)
    out = decode_image(jpeg_bytes(src), OPTS, "x.jpg")
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(np.int16) - src).mean() < 4.0


def test_grayscale_and_palette_images_convert() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    assert decode_image(buf.getvalue(), OPTS, "g.png").shape == (8, 8, 3)
    one = decode_image(buf.getvalue(), af.ImageOptions(channels=1), "g.png")
    assert np.array_equal(one[:, :, 0], gray)
    pal = io.BytesIO()
    Image.fromarray(synthetic_image(0, 8)).convert("P").save(pal, "GIF")
    assert decode_image(pal.getvalue(), OPTS, "p.gif").shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("fit", "size"), [("crop", (20, 30)), ("stretch", (20, 30)), ("crop", (64, 8))]
)
def test_resize_gives_the_requested_shape(fit: str, size: tuple[int, int]) -> None:
    opts = af.ImageOptions(size=size, fit=fit)  # type: ignore[arg-type]
    for data in (png_bytes(synthetic_image(1, 48)), jpeg_bytes(synthetic_image(2, 100))):
        out = decode_image(data, opts, "x")
        assert out.shape == (*size, 3) and out.flags.c_contiguous


def test_centre_crop_keeps_the_middle() -> None:
    src = np.zeros((10, 30, 3), np.uint8)
    src[:, 10:20] = 255  # a white centre square between black sides
    out = decode_image(png_bytes(src), af.ImageOptions(size=(10, 10)), "x.png")
    assert out.min() == 255


def test_corrupt_and_unknown_bytes_raise_decode_error() -> None:
    data = jpeg_bytes(synthetic_image(5, 64))
    with pytest.raises(af.DecodeError, match=r"^cannot decode a\.jpg: ") as info:
        decode_image(data[: len(data) // 2], OPTS, "a.jpg")
    assert info.value.source == "a.jpg"
    with pytest.raises(af.DecodeError, match=r"^cannot decode b\.bin: UnidentifiedImageError"):
        decode_image(b"not an image at all", OPTS, "b.bin")
    with pytest.raises(af.DecodeError, match="PNG header has no IHDR"):
        decode_image(b"\x89PNG\r\n\x1a\n", OPTS, "c.png")


@pytest.mark.parametrize("make", [png_header_bomb, jpeg_header_bomb])
def test_decompression_bombs_are_refused_without_allocating(make) -> None:  # type: ignore[no-untyped-def]
    data = make(60_000, 50_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        af.DecodeError,
        match=r"^refusing to decode bomb: 60000x50000 = 3,000,000,000 pixels is more than "
        r"max_pixels=50,000,000 \(a decompression bomb\?\)$",
    ):
        decode_image(data, OPTS, "bomb")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # nowhere near the 9 GB the pixels would take


def test_real_png_bomb_is_refused_by_its_header() -> None:
    raw = np.zeros((4000, 4000), np.uint8)  # 16 MB of pixels, a few kB compressed
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(af.DecodeError, match="16,000,000 pixels is more than max_pixels=1,000,000"):
        decode_image(buf.getvalue(), af.ImageOptions(max_pixels=1_000_000), "z.png")


def test_other_formats_are_bounded_too() -> None:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(0, 40)).save(buf, "BMP")
    with pytest.raises(af.DecodeError, match="40x40 = 1,600 pixels is more than max_pixels=100"):
        decode_image(buf.getvalue(), af.ImageOptions(max_pixels=100), "x.bmp")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (0, 3)}, "size must be a (height, width) pair of ints >= 1, got (0, 3)"),
        ({"size": [3, 3]}, "size must be a (height, width) pair of ints >= 1, got [3, 3]"),
        ({"fit": "pad"}, "fit must be 'crop' or 'stretch', got 'pad'"),
        ({"channels": 5}, "channels must be 1, 3 or 4, got 5"),
        ({"max_pixels": 0}, "max_pixels must be an int >= 1, got 0"),
    ],
)
def test_image_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.ImageOptions(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_errors_pickle_with_their_fields() -> None:
    http = af.HttpError(
        "GET u failed", url="u", status=503, attempts=3, kind="status", key=("u", 1)
    )
    back = pickle.loads(pickle.dumps(http))
    assert (str(back), back.url, back.status, back.attempts, back.kind, back.key) == (
        "GET u failed",
        "u",
        503,
        3,
        "status",
        ("u", 1),
    )
    dec = pickle.loads(pickle.dumps(af.DecodeError("bad", source="p", key="k")))
    assert (str(dec), dec.source, dec.key) == ("bad", "p", "k")
    assert isinstance(dec, ValueError) and isinstance(dec, af.FetchError)
