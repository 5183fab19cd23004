"""Image decoding: JPEG and PNG bytes to ``uint8[H, W, C]``, bounded in pixels, resized.

Pure and synchronous: the fetchers run :func:`decode_image` in a thread pool from
``bridge.py``, never on the event loop. JPEG goes through simplejpeg (libjpeg-turbo), which
decodes about 1.4x faster than Pillow on one thread and releases the GIL for the whole decode;
PNG, other formats Pillow reads, and JPEGs simplejpeg rejects go through Pillow.

Before any pixel is decoded, the image's dimensions are read from its header (JPEG SOF, PNG
IHDR, else Pillow's lazy open) and checked against ``max_pixels``: a decompression bomb raises
:class:`DecodeError` without allocating its pixels.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import simplejpeg
from PIL import Image

from ..errors import ConfigError, DecodeError

__all__ = ["ImageOptions", "decode_image", "image_size"]

_JPEG: Final = b"\xff\xd8\xff"
_PNG: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How fetched images are decoded.

    Args:
        size: ``(height, width)`` of every decoded image, so images of different sizes batch
            together; None keeps each image's own size.
        fit: ``"crop"`` scales the image to cover ``size`` and cuts the centre out (aspect
            ratio kept); ``"stretch"`` scales to ``size`` exactly.
        channels: 3 for RGB, 1 for grayscale; the result is always ``uint8[H, W, channels]``.
        max_pixels: largest ``width * height`` accepted, checked from the header before
            decoding.

    Raises:
        ConfigError: for any invalid argument.
    """

    size: tuple[int, int] | None = None
    fit: Literal["crop", "stretch"] = "crop"
    channels: Literal[1, 3] = 3
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        size = self.size
        if size is not None and (
            not isinstance(size, tuple)
            or len(size) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in size)
            or min(size) < 1
        ):
            raise ConfigError(f"size must be a (height, width) pair of ints >= 1, got {size!r}")
        if self.fit not in ("crop", "stretch"):
            raise ConfigError(f"fit must be 'crop' or 'stretch', got {self.fit!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, int)
            or self.max_pixels < 1
        ):
            raise ConfigError(f"max_pixels must be an int >= 1, got {self.max_pixels!r}")


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from a JPEG or PNG header; None for other formats.

    Raises:
        ValueError: the header is JPEG or PNG but malformed or truncated.
    """
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG header has no IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(_JPEG):
        return ("jpeg", *_jpeg_size(data))
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG markers up to the first SOFn frame header."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise ValueError("JPEG header ends before its frame header (SOF)")


def decode_image(data: bytes, options: ImageOptions, source: str) -> np.ndarray:
    """Decode ``data`` into a C-contiguous ``uint8[H, W, channels]`` array.

    Raises:
        DecodeError: not a readable image, or more than ``options.max_pixels`` pixels; the
            message names ``source``.
    """
    try:
        header = image_size(data)
    except ValueError as exc:
        raise DecodeError(f"cannot decode {source}: {exc}", source=source) from exc
    if header is not None:
        _check_pixels(header[1], header[2], options, source)
    try:
        if header is not None and header[0] == "jpeg":
            image = _decode_jpeg(data, options, source)
        else:
            image = _decode_pillow(data, options, source, checked=header is not None)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"cannot decode {source}: {type(exc).__name__}: {exc}", source=source
        ) from exc
    return _fit(image, options)


def _check_pixels(width: int, height: int, options: ImageOptions, source: str) -> None:
    if width < 1 or height < 1:
        raise DecodeError(f"cannot decode {source}: image is {width}x{height}", source=source)
    if width * height > options.max_pixels:
        raise DecodeError(
            f"refusing to decode {source}: {width}x{height} = {width * height:,} pixels is more "
            f"than max_pixels={options.max_pixels:,} (a decompression bomb?)",
            source=source,
        )


def _decode_jpeg(data: bytes, options: ImageOptions, source: str) -> np.ndarray:
    colorspace = "RGB" if options.channels == 3 else "GRAY"
    min_h, min_w = options.size if options.size is not None else (0, 0)
    if options.fit == "stretch":  # DCT scaling must not go below either side
        min_h = min_w = max(min_h, min_w)
    try:
        image: np.ndarray = simplejpeg.decode_jpeg(
            data, colorspace=colorspace, min_height=min_h, min_width=min_w
        )
    except ValueError:  # e.g. an unusual colour space: Pillow may still read it
        return _decode_pillow(data, options, source, checked=True)
    return image


def _decode_pillow(data: bytes, options: ImageOptions, source: str, *, checked: bool) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if not checked:
            _check_pixels(im.width, im.height, options, source)
        mode = "RGB" if options.channels == 3 else "L"
        if im.mode != mode:
            converted = im.convert(mode)
            array = np.asarray(converted)
        else:
            array = np.asarray(im)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def _fit(image: np.ndarray, options: ImageOptions) -> np.ndarray:
    """Scale (and centre-crop) to ``options.size``; make the result C-contiguous."""
    if image.ndim == 2:
        image = image[:, :, None]
    size = options.size
    if size is None or image.shape[:2] == size:
        return np.ascontiguousarray(image)
    out_h, out_w = size
    h, w = image.shape[:2]
    box: tuple[float, float, float, float] = (0.0, 0.0, float(w), float(h))
    if options.fit == "crop":
        scale = max(out_h / h, out_w / w)
        crop_w, crop_h = out_w / scale, out_h / scale
        left, top = (w - crop_w) / 2, (h - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    resized: Any = pil.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    out = np.asarray(resized)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out)
