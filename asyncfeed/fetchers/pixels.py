"""Pixel policy: any Pillow mode to ``uint8[H, W, channels]``, EXIF orientation, output dtype.

Pure and synchronous (runs in the decode pool). The rules, per mode:

- 16-bit samples (``I;16*``, and ``I`` from a 16-bit PNG) keep their top 8 bits
  (``v >> 8``, as Pillow does for 16-bit RGB and torchvision's ``to_dtype(..., scale=True)``):
  never clipped, at most one level below exact rounding.
- 32-bit integer (``I``, from TIFF) and float (``F``) pixels have no defined 8-bit scale and
  are refused rather than guessed.
- Alpha (RGBA, LA, PA, palette or grayscale with a transparent colour) is kept with
  ``channels=4``, otherwise composited over ``background`` (or dropped if it is None).
- Palette, 1-bit, CMYK, YCbCr and the rest go through Pillow's ``convert`` (no ICC profile is
  applied); grayscale is ITU-R 601-2 luma.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from PIL import Image

from .image_options import ImageOptions

__all__ = ["UnscaledPixels", "orient", "pillow_pixels", "to_output"]

_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class UnscaledPixels(ValueError):
    """Pixels with no defined 8-bit scale (32-bit integers or floats): refused, not guessed."""


def pillow_pixels(im: Image.Image, options: ImageOptions) -> np.ndarray:
    """The pixels of a loaded Pillow image as ``uint8[H, W, options.channels]``.

    Raises:
        UnscaledPixels: the mode has no defined 8-bit scale (32-bit integer or float pixels).
    """
    mode = im.mode
    if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):
        narrow = (np.asarray(im).astype(np.uint32, copy=False) >> 8).astype(np.uint8)
        im = Image.fromarray(narrow)
    elif mode in ("I", "F"):
        kind = "integer" if mode == "I" else "float"
        raise UnscaledPixels(f"32-bit {kind} pixels (mode {mode!r}) have no defined 8-bit scale")
    channels = options.channels
    alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    if channels == 4:
        return _array(im if im.mode == "RGBA" else im.convert("RGBA"), 4)
    if alpha:
        rgba = _array(im if im.mode == "RGBA" else im.convert("RGBA"), 4)
        background = options.background
        rgb = rgba[:, :, :3] if background is None else _composite(rgba, background)
        if channels == 3:
            return np.ascontiguousarray(rgb)
        return _array(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"), 1)
    target = "RGB" if channels == 3 else "L"
    return _array(im if im.mode == target else im.convert(target), channels)


def _array(im: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(im)
    if array.ndim == 2:
        array = array[:, :, None]
    assert array.shape[2] == channels and array.dtype == np.uint8, (im.mode, array.shape)
    return array


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """``rgba`` over an opaque ``background``, rounded to the nearest level."""
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    rgb = rgba[:, :, :3].astype(np.uint16)
    under = np.asarray(background, np.uint16)[None, None, :]
    out = (rgb * alpha + under * (255 - alpha) + 127) // 255
    result: np.ndarray = out.astype(np.uint8)
    return result


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` (``[H, W, C]``) turned as EXIF orientation ``orientation`` (1-8) says.

    The same pixels as Pillow's ``ImageOps.exif_transpose``; a view, not a copy.
    """
    if orientation <= 1 or orientation > 8:
        return image
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    turned = image.transpose(1, 0, 2)
    if orientation == 5:
        return turned
    if orientation == 6:
        return turned[:, ::-1]
    if orientation == 7:
        return turned[::-1, ::-1]
    return turned[::-1]  # 8


def to_output(image: np.ndarray, options: ImageOptions) -> np.ndarray:
    """A ``uint8[H, W, C]`` image in the options' dtype, layout and normalisation.

    Floats are ``x / 255``, then ``(x - mean) / std`` per channel with ``normalize``, computed
    in float32 (then rounded to float16 if asked). The result is C-contiguous.
    """
    if not options.converts:
        return np.ascontiguousarray(image)
    if options.output_dtype == "uint8":
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    scale, offset = _scale_offset(options, image.shape[2])
    out: Any = image.astype(np.float32) * scale
    if offset is not None:
        out += offset
    if options.layout == "CHW":
        out = out.transpose(2, 0, 1)
    result: np.ndarray = np.ascontiguousarray(out, dtype=np.dtype(options.output_dtype))
    return result


def _scale_offset(options: ImageOptions, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-channel ``scale`` and ``offset`` with ``x * scale + offset == (x/255 - mean)/std``."""
    if options.normalize is None:
        return np.full(channels, 1.0 / 255.0, np.float32), None
    mean, std = (np.asarray(v, np.float64) for v in options.normalize)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (-mean / std).astype(np.float32)
    return scale, offset
