"""What the decoder hands out: dtype, layout and normalisation; the options' validation; the
EXIF orientation read from JPEG headers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncfeed as af
from asyncfeed.fetchers.decode import decode_image
from asyncfeed.fetchers.headers import exif_orientation, read_header
from tests.images import encode, photo, with_exif

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SRC = photo(20, 30, 7)
PNG = encode(SRC, "PNG")


def test_the_default_is_uint8_hwc() -> None:
    out = decode_image(PNG, af.ImageOptions(), "x")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)


def test_float_dtypes_are_scaled_to_0_1_like_to_tensor() -> None:
    for dtype in ("float32", "float16"):
        out = decode_image(PNG, af.ImageOptions(dtype=dtype), "x")
        assert out.dtype == np.dtype(dtype) and out.shape == (20, 30, 3)
        assert np.allclose(out.astype(np.float64), SRC / 255.0, atol=1e-3)


def test_chw_layout_is_contiguous_and_transposed() -> None:
    out = decode_image(PNG, af.ImageOptions(layout="CHW"), "x")
    assert out.dtype == np.uint8 and out.shape == (3, 20, 30) and out.flags.c_contiguous
    assert np.array_equal(out, SRC.transpose(2, 0, 1))


def test_normalize_is_to_tensor_then_normalize_and_implies_float32() -> None:
    options = af.ImageOptions(layout="CHW", normalize=IMAGENET)
    out = decode_image(PNG, options, "x")
    mean, std = (np.asarray(v)[:, None, None] for v in IMAGENET)
    expected = (SRC.transpose(2, 0, 1) / 255.0 - mean) / std
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.abs(out - expected).max() < 1e-5
    half = decode_image(PNG, af.ImageOptions(normalize=IMAGENET, dtype="float16"), "x")
    assert half.dtype == np.float16
    assert np.abs(half.astype(np.float64) - expected.transpose(1, 2, 0)).max() < 5e-3


def test_a_single_mean_and_std_serve_every_channel() -> None:
    options = af.ImageOptions(channels=1, normalize=(0.5, 0.25))
    assert options.normalize == ((0.5,), (0.25,))
    out = decode_image(PNG, options, "x")
    gray = decode_image(PNG, af.ImageOptions(channels=1), "x")
    assert np.allclose(out, (gray / 255.0 - 0.5) / 0.25, atol=1e-5)
    assert af.ImageOptions(normalize=(0, 1)).normalize == ((0.0,) * 3, (1.0,) * 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (0, 3)}, "size must be a (height, width) pair of ints >= 1, got (0, 3)"),
        ({"channels": 2}, "channels must be 1, 3 or 4, got 2"),
        (
            {"interpolation": "linear"},
            "interpolation must be one of 'nearest', 'bilinear', 'bicubic', 'lanczos', "
            "'box', got 'linear'",
        ),
        ({"antialias": 1}, "antialias must be a bool, got 1"),
        (
            {"interpolation": "lanczos", "antialias": False},
            "antialias=False needs interpolation 'nearest', 'bilinear' or 'bicubic', got 'lanczos'",
        ),
        ({"jpeg": "slow"}, "jpeg must be 'fast' or 'exact', got 'slow'"),
        (
            {"background": (0, 0, 256)},
            "background must be an (r, g, b) tuple of ints in 0..255 or None, got (0, 0, 256)",
        ),
        (
            {"background": "white"},
            "background must be an (r, g, b) tuple of ints in 0..255 or None, got 'white'",
        ),
        (
            {"apply_exif_orientation": "yes"},
            "apply_exif_orientation must be a bool, got 'yes'",
        ),
        (
            {"dtype": "float64"},
            "dtype must be 'uint8', 'float32', 'float16' or None, got 'float64'",
        ),
        ({"layout": "NCHW"}, "layout must be 'HWC' or 'CHW', got 'NCHW'"),
        (
            {"normalize": IMAGENET, "dtype": "uint8"},
            "normalize needs a float dtype, got dtype='uint8'",
        ),
        (
            {"normalize": (0.5,)},
            "normalize must be a (mean, std) pair of numbers or per-channel sequences, got (0.5,)",
        ),
        (
            {"normalize": ("a", 1)},
            "normalize must be a (mean, std) pair of numbers or per-channel sequences, "
            "got ('a', 1)",
        ),
        (
            {"normalize": (0.5, (0.2, 0.0, 0.2))},
            "normalize: every std must be > 0, got (0.2, 0.0, 0.2)",
        ),
        (
            {"normalize": ((0.1, 0.2), (0.1, 0.2, 0.3))},
            "normalize: mean has 2 values and std 3; give one per channel",
        ),
        (
            {"normalize": IMAGENET, "channels": 1},
            "normalize: 3 values per channel, but channels=1",
        ),
    ],
)
def test_image_options_are_validated_with_exact_messages(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.ImageOptions(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_new_options_are_keyword_only_and_the_old_order_holds() -> None:
    options = af.ImageOptions((8, 8), "stretch", 1, 1000)
    assert (options.size, options.fit, options.channels, options.max_pixels) == (
        (8, 8),
        "stretch",
        1,
        1000,
    )
    with pytest.raises(TypeError):
        af.ImageOptions((8, 8), "crop", 3, 1000, "bicubic")  # type: ignore[call-arg]


# -- EXIF orientation from the JPEG header --------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_jpeg_header_gives_the_exif_orientation(orientation: int) -> None:
    header = read_header(with_exif(SRC, "JPEG", orientation))
    assert header is not None and header == ("jpeg", 30, 20, orientation)


def test_a_jpeg_without_exif_is_upright() -> None:
    header = read_header(encode(SRC, "JPEG"))
    assert header is not None and header.orientation == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_exif_parsing_never_raises_on_garbage(block: bytes) -> None:
    assert 0 <= exif_orientation(block) <= 8
    for prefix in (b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08"):
        assert 0 <= exif_orientation(prefix + block) <= 8


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400))
def test_a_cut_jpeg_header_is_a_value_error_or_a_header(cut: int) -> None:
    data = with_exif(SRC, "JPEG", 6)
    sof = data.index(b"\xff\xc0")
    if cut + 3 < sof + 9:  # the frame header is cut
        with pytest.raises(ValueError, match="JPEG"):
            read_header(data[: cut + 3])
    else:
        assert read_header(data[: cut + 3]) == ("jpeg", 30, 20, 6)
