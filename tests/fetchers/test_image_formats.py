"""What comes out of each format: the tables of docs/images.md, row by row.

Every image is made here with Pillow; the reference is Pillow's own decode where the policy
is "as Pillow", and the documented rule (``>> 8``, compositing, luma...) elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image
from tests.images import (
    encode,
    gray16,
    max_diff,
    mean_diff,
    photo,
    pillow_rgb,
    png_gray16,
    png_rgb16,
    rgba_ramp,
    truncated,
    with_exif,
)

RGB = af.ImageOptions()
GRAY = af.ImageOptions(channels=1)
RGBA = af.ImageOptions(channels=4)
SRC = photo(24, 40)


def decode(data: bytes, options: af.ImageOptions = RGB) -> np.ndarray:
    out = decode_image(data, options, "img")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    return out


# -- JPEG ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [{"quality": 90}, {"quality": 90, "progressive": True}, {"quality": 95, "subsampling": 0}],
    ids=["baseline", "progressive", "444"],
)
def test_jpeg_matches_pillows_full_decode(kw: dict[str, object]) -> None:
    data = encode(SRC, "JPEG", **kw)
    assert max_diff(decode(data), pillow_rgb(data)) == 0


def test_cmyk_jpeg_is_converted_to_rgb_as_pillow_does() -> None:
    data = encode(Image.fromarray(SRC).convert("CMYK"), "JPEG", quality=95)
    out = decode(data)
    assert out.shape == (24, 40, 3)
    assert max_diff(out, pillow_rgb(data)) <= 1


def test_grayscale_jpeg_gives_equal_channels_or_one() -> None:
    gray = np.asarray(Image.fromarray(SRC).convert("L"))
    data = encode(gray, "JPEG", quality=95)
    rgb = decode(data)
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])
    one = decode(data, GRAY)
    assert one.shape == (24, 40, 1) and np.array_equal(one[:, :, 0], rgb[:, :, 0])


def test_rgb_jpeg_to_rgba_gets_an_opaque_alpha() -> None:
    out = decode(encode(SRC, "JPEG", quality=95), RGBA)
    assert out.shape == (24, 40, 4) and out[:, :, 3].min() == 255


# -- PNG -----------------------------------------------------------------------------------


def test_png_8_bit_is_pixel_exact() -> None:
    assert np.array_equal(decode(encode(SRC, "PNG")), SRC)


def test_png_16_bit_gray_keeps_its_top_8_bits_never_clipped() -> None:
    values = gray16()
    out = decode(png_gray16(values))
    expected = (values >> 8).astype(np.uint8)
    assert np.array_equal(out[:, :, 0], expected)
    assert np.array_equal(out[:, :, 1], expected) and np.array_equal(out[:, :, 2], expected)
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.01  # Pillow's convert("RGB") makes 99 % of this white
    assert np.array_equal(decode(png_gray16(values), GRAY)[:, :, 0], expected)


def test_png_16_bit_rgb_keeps_its_top_8_bits() -> None:
    values = np.random.default_rng(1).integers(0, 65536, (12, 20, 3)).astype(np.uint16)
    values[0, 0] = 65535
    out = decode(png_rgb16(values))
    assert np.array_equal(out, (values >> 8).astype(np.uint8))


def test_png_16_bit_rgba_keeps_its_top_8_bits_and_its_alpha() -> None:
    values = np.random.default_rng(2).integers(0, 65536, (12, 20, 4)).astype(np.uint16)
    out = decode(png_rgb16(values), RGBA)
    assert np.array_equal(out, (values >> 8).astype(np.uint8))


def test_palette_png_without_transparency_is_its_colours() -> None:
    data = encode(Image.fromarray(SRC).quantize(16), "PNG")
    assert np.array_equal(decode(data), pillow_rgb(data))


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_a_transparent_index_is_composited_or_kept(fmt: str) -> None:
    pal = Image.fromarray(SRC).quantize(8)
    data = encode(pal, fmt, transparency=0)
    hole = np.asarray(pal) == 0
    assert hole.any() and not hole.all()
    out = decode(data)
    assert (out[hole] == 255).all()  # over the default white background
    assert np.array_equal(out[~hole], pillow_rgb(data)[~hole])
    rgba = decode(data, RGBA)
    assert (rgba[:, :, 3][hole] == 0).all() and (rgba[:, :, 3][~hole] == 255).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_colour_is_composited_too(mode: str) -> None:
    image = Image.fromarray(SRC).convert(mode)
    key = image.getpixel((0, 0))
    data = encode(image, "PNG", transparency=key)
    hole = np.asarray(image) == key
    hole = hole if hole.ndim == 2 else hole.all(axis=2)
    out = decode(data)
    assert hole[0, 0] and not hole.all()
    assert (out[hole] == 255).all() and np.array_equal(out[~hole], pillow_rgb(data)[~hole])
    assert (decode(data, RGBA)[:, :, 3] == np.where(hole, 0, 255)).all()


def test_rgba_png_is_composited_over_white_by_default() -> None:
    src = rgba_ramp()
    out = decode(encode(src, "PNG"))
    alpha = src[:, :, 3:4].astype(np.uint16)
    expected = (src[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
    assert np.array_equal(out, expected.astype(np.uint8))
    assert (out[:, 0] == 255).all()  # alpha 0: the background
    assert np.array_equal(out[:, -1], src[:, -1, :3])  # alpha 255: the colour


def test_rgba_png_background_none_and_channels_4() -> None:
    src = rgba_ramp()
    data = encode(src, "PNG")
    black = decode(data, af.ImageOptions(background=(0, 0, 0)))
    assert (black[:, 0] == 0).all()
    assert np.array_equal(decode(data, af.ImageOptions(background=None)), src[:, :, :3])
    assert np.array_equal(decode(data, RGBA), src)


def test_gray_alpha_png_composites_then_stays_gray() -> None:
    gray = np.asarray(Image.fromarray(rgba_ramp()).convert("LA"))
    out = decode(encode(gray, "PNG"), GRAY)
    alpha = gray[:, :, 1].astype(np.uint16)
    expected = (gray[:, :, 0] * alpha + 255 * (255 - alpha) + 127) // 255
    assert np.array_equal(out[:, :, 0], expected.astype(np.uint8))


def test_one_bit_png_is_0_or_255() -> None:
    bits = Image.fromarray(SRC).convert("1")
    out = decode(encode(bits, "PNG"))
    assert set(np.unique(out).tolist()) == {0, 255}
    assert np.array_equal(out[:, :, 0] == 255, np.asarray(bits))


# -- GIF, WebP, BMP, TIFF ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True}), ("PNG", {"optimize": True})],
)
def test_lossless_formats_are_pixel_exact(fmt: str, kw: dict[str, object]) -> None:
    assert np.array_equal(decode(encode(SRC, fmt, **kw)), SRC)


def test_cmyk_tiff_is_as_pillow_converts_it() -> None:
    data = encode(Image.fromarray(SRC).convert("CMYK"), "TIFF")
    assert np.array_equal(decode(data), pillow_rgb(data))


def test_lossy_webp_is_as_pillow_decodes_it() -> None:
    data = encode(SRC, "WEBP", quality=80)
    assert np.array_equal(decode(data), pillow_rgb(data))


def test_gif_gives_its_first_frame_in_its_palette_colours() -> None:
    frames = [Image.fromarray(photo(24, 40, s)).quantize(32) for s in (1, 2)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.array_equal(decode(data), np.asarray(frames[0].convert("RGB")))


def test_webp_with_alpha_is_composited() -> None:
    src = rgba_ramp()
    out = decode(encode(src, "WEBP", lossless=True))
    assert (out[:, 0] == 255).all() and np.array_equal(out[:, -1], src[:, -1, :3])


def test_tiff_16_bit_gray_keeps_its_top_8_bits() -> None:
    values = gray16()
    out = decode(encode(Image.fromarray(values), "TIFF"))
    assert np.array_equal(out[:, :, 0], (values >> 8).astype(np.uint8))


@pytest.mark.parametrize(("dtype", "mode"), [(np.float32, "F"), (np.int32, "I")])
def test_32_bit_pixels_are_refused_not_guessed(dtype: type, mode: str) -> None:
    data = encode(Image.fromarray(SRC[:, :, 0].astype(dtype)), "TIFF")
    kind = "float" if mode == "F" else "integer"
    with pytest.raises(
        af.DecodeError,
        match=rf"^cannot decode img: 32-bit {kind} pixels \(mode '{mode}'\) have no defined "
        r"8-bit scale$",
    ):
        decode(data)


# -- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied_as_pillow_exif_transpose(orientation: int, fmt: str) -> None:
    kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    data = with_exif(SRC, fmt, orientation, **kw)
    out = decode(data)
    expected = pillow_rgb(data, transpose=True)
    assert out.shape == expected.shape == ((24, 40, 3) if orientation < 5 else (40, 24, 3))
    assert max_diff(out, expected) == 0
    stored = decode(data, af.ImageOptions(apply_exif_orientation=False))
    assert max_diff(stored, decode(encode(SRC, fmt, **kw))) == 0  # Pillow turns a TIFF itself


@pytest.mark.parametrize("jpeg", ["fast", "exact"])
def test_a_turned_photo_is_resized_upright(jpeg: str) -> None:
    big = photo(300, 600, 3)  # landscape as stored, portrait as shown (orientation 6)
    data = with_exif(big, "JPEG", 6, quality=95)
    options = af.ImageOptions(size=(100, 50), jpeg=jpeg)  # type: ignore[arg-type]
    out = decode(data, options)
    assert out.shape == (100, 50, 3)
    upright = af.ImageOptions(size=(100, 50), jpeg="exact")
    reference = decode(encode(pillow_rgb(data, transpose=True), "PNG"), upright)
    assert mean_diff(out, reference) < (1.0 if jpeg == "exact" else 4.0)


# -- truncated files and bombs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_truncated_files_raise_decode_error_never_half_an_image(
    fmt: str, kw: dict[str, object]
) -> None:
    data = encode(photo(64, 64, 2), fmt, **kw)
    with pytest.raises(af.DecodeError, match=r"^cannot decode cut\.img: ") as info:
        decode_image(truncated(data), RGB, "cut.img")
    assert info.value.source == "cut.img"


def test_a_jpeg_missing_only_its_end_marker_is_refused_too() -> None:
    data = encode(SRC, "JPEG")
    with pytest.raises(af.DecodeError, match=r"^cannot decode img: .*truncated"):
        decode(data[:-2])


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF", "BMP", "PNG", "JPEG"])
def test_every_format_is_bounded_by_max_pixels_before_decoding(fmt: str) -> None:
    data = encode(photo(40, 40), fmt)
    with pytest.raises(
        af.DecodeError,
        match=r"^refusing to decode img: 40x40 = 1,600 pixels is more than max_pixels=100 ",
    ):
        decode(data, af.ImageOptions(max_pixels=100))
