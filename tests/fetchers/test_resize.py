"""Resizing: the named filters as Pillow applies them, point sampling as torch does, and the
exact JPEG mode against Pillow's full decode and the same resize."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image
from asyncfeed.fetchers.resize import crop_box
from tests.images import encode, mean_diff, photo

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def pillow_resize(src: np.ndarray, options: af.ImageOptions) -> np.ndarray:
    """Pillow's resize of ``src`` to ``options.size`` with the options' filter and crop box."""
    assert options.size is not None
    box = crop_box(src.shape[0], src.shape[1], options)
    im = Image.fromarray(src).resize(options.size[::-1], FILTERS[options.interpolation], box=box)
    return np.asarray(im)


@pytest.mark.parametrize("interpolation", list(FILTERS))
@pytest.mark.parametrize("fit", ["crop", "stretch"])
def test_antialiased_filters_are_pillows_resize(interpolation: str, fit: str) -> None:
    src = photo(90, 130, 4)
    options = af.ImageOptions(size=(32, 40), fit=fit, interpolation=interpolation)  # type: ignore[arg-type]
    out = decode_image(encode(src, "PNG"), options, "x.png")
    assert np.array_equal(out, pillow_resize(src, options))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(20, 30), (64, 96), (200, 50), (33, 250)])
def test_point_sampled_resize_matches_torch_interpolate(mode: str, size: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    src = photo(64, 96, 6)
    options = af.ImageOptions(
        size=size,
        fit="stretch",
        interpolation=mode,  # type: ignore[arg-type]
        antialias=False,
    )
    out = decode_image(encode(src, "PNG"), options, "x.png")
    x = torch.from_numpy(src).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(
        x, size=size, mode=mode, align_corners=False, antialias=False
    )
    expected = ref[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(out.astype(np.int16) - expected).max() <= 1


def test_antialias_averages_what_point_sampling_skips() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    smooth = decode_image(data, af.ImageOptions(size=(12, 12)), "s")  # 8 x 8 pixels each
    sampled = decode_image(data, af.ImageOptions(size=(12, 12), antialias=False), "s")  # 2 x 2
    assert smooth.std() < 20 < 30 < sampled.std()


def test_rgba_is_resized_premultiplied_so_hidden_colour_does_not_bleed() -> None:
    src = np.zeros((32, 32, 4), np.uint8)
    src[:, :16] = (255, 0, 0, 0)  # invisible red
    src[:, 16:] = (0, 0, 255, 255)  # opaque blue
    for antialias in (True, False):
        options = af.ImageOptions(size=(8, 8), channels=4, antialias=antialias)
        out = decode_image(encode(src, "PNG"), options, "x.png")
        seen = out[:, :, 3] > 0
        assert seen.any() and (out[:, :, 0][seen] <= 1).all(), antialias


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    out_h=st.integers(1, 50),
    out_w=st.integers(1, 50),
    fit=st.sampled_from(["crop", "stretch"]),
    antialias=st.booleans(),
    mode=st.sampled_from(["nearest", "bilinear", "bicubic"]),
    channels=st.sampled_from([1, 3, 4]),
)
def test_any_size_fits_any_size(
    h: int, w: int, out_h: int, out_w: int, fit: str, antialias: bool, mode: str, channels: int
) -> None:
    src = photo(h, w, 1)
    options = af.ImageOptions(
        size=(out_h, out_w),
        fit=fit,  # type: ignore[arg-type]
        channels=channels,  # type: ignore[arg-type]
        interpolation=mode,  # type: ignore[arg-type]
        antialias=antialias,
    )
    out = decode_image(encode(src, "PNG"), options, "x.png")
    assert out.shape == (out_h, out_w, channels) and out.flags.c_contiguous


def test_a_flat_image_stays_flat_through_every_filter() -> None:
    flat = np.full((37, 53, 3), (10, 128, 250), np.uint8)
    for mode in FILTERS:
        for antialias in (True, False) if mode in ("bilinear", "bicubic") else (True,):
            options = af.ImageOptions(size=(11, 29), interpolation=mode, antialias=antialias)  # type: ignore[arg-type]
            out = decode_image(encode(flat, "PNG"), options, "f")
            assert (out == flat[:11, :29]).all(), (mode, antialias)


# -- JPEG: fast (reduced-scale) and exact ---------------------------------------------------


def pillow_reference(data: bytes, options: af.ImageOptions) -> np.ndarray:
    """Pillow's full decode, then the same resize."""
    with Image.open(io.BytesIO(data)) as im:
        full = np.asarray(im.convert("RGB"))
    return pillow_resize(full, options)


@pytest.mark.parametrize("shape", [(600, 800), (375, 500), (1000, 333)])
def test_exact_jpeg_is_within_one_level_of_pillows_full_decode_and_resize(
    shape: tuple[int, int],
) -> None:
    data = encode(photo(*shape, seed=8), "JPEG", quality=90)
    options = af.ImageOptions(size=(112, 112), jpeg="exact")
    out = decode_image(data, options, "x.jpg")
    assert mean_diff(out, pillow_reference(data, options)) <= 1.0


def test_fast_jpeg_decodes_at_a_reduced_scale_close_to_exact() -> None:
    data = encode(photo(800, 800, seed=9), "JPEG", quality=90)
    fast = af.ImageOptions(size=(100, 100))
    out = decode_image(data, fast, "x.jpg")
    reference = pillow_reference(data, fast)
    assert 0.0 < mean_diff(out, reference) < 4.0  # 1/8 scale inside libjpeg: not the same


def test_fast_jpeg_reduces_only_by_two_or_more() -> None:
    data = encode(photo(375, 500, seed=10), "JPEG", quality=90)
    fast = decode_image(data, af.ImageOptions(size=(224, 224)), "x.jpg")
    exact = decode_image(data, af.ImageOptions(size=(224, 224), jpeg="exact"), "x.jpg")
    assert np.array_equal(fast, exact)  # 375 -> 224 is less than 2x: decoded at full scale
