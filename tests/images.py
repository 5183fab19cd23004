"""Test images made with Pillow in every format of docs/images.md, and Pillow's references.

Everything is generated here, in memory: 16-bit PNGs, EXIF-rotated JPEGs, RGBA, palette,
1-bit, CMYK, progressive, GIF, WebP, BMP, TIFF, truncated files.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from asyncfeed.fetchers.service import synthetic_image


def encode(image: Image.Image | np.ndarray, fmt: str, **kw: Any) -> bytes:
    """``image`` saved by Pillow in ``fmt`` (e.g. "PNG", "JPEG", "WEBP")."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A ``uint8[height, width, 3]`` test picture: the synthetic pattern, cut to shape."""
    side = max(height, width)
    return np.ascontiguousarray(synthetic_image(seed, side)[:height, :width])


def rgba_ramp(height: int = 16, width: int = 32) -> np.ndarray:
    """Colour from :func:`photo`, alpha rising 0 → 255 from left to right (0 and 255 at the
    edges)."""
    alpha = np.round(np.linspace(0, 255, width)).astype(np.uint8)
    return np.dstack([photo(height, width, 5), np.tile(alpha, (height, 1))])


def gray16(height: int = 16, width: int = 64) -> np.ndarray:
    """``uint16`` values spanning 0..65535, both ends included."""
    values = np.linspace(0, 65535, height * width).round().astype(np.uint16)
    return values.reshape(height, width)


def png_gray16(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG (Pillow mode ``I;16``)."""
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16", image.mode
    return encode(image, "PNG")


def png_rgb16(values: np.ndarray) -> bytes:
    """A 16-bit RGB (or, with 4 channels, RGBA) PNG, written by hand (Pillow cannot)."""
    height, width, channels = values.shape
    rows = values.astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    colour_type = {3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def with_exif(array: np.ndarray, fmt: str, orientation: int, **kw: Any) -> bytes:
    """``array`` saved in ``fmt`` with EXIF orientation tag 274 set to ``orientation`` (for a
    TIFF, the orientation tag of the TIFF itself)."""
    if fmt == "TIFF":
        return encode(array, fmt, tiffinfo={274: orientation}, **kw)
    exif = Image.Exif()
    exif[274] = orientation
    return encode(array, fmt, exif=exif, **kw)


def pillow_rgb(data: bytes, *, transpose: bool = False) -> np.ndarray:
    """Pillow's own full decode to RGB (EXIF orientation applied when ``transpose``)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        turned = ImageOps.exif_transpose(im) if transpose else im
        return np.asarray(turned.convert("RGB"))


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """The first ``keep`` of ``data``."""
    return data[: int(len(data) * keep)]


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
