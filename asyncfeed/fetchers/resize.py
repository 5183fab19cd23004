"""Resizing: centre crop or stretch to ``ImageOptions.size`` with the chosen filter.

Pure and synchronous (runs in the decode pool). Antialiased resizing is Pillow's
``Image.resize`` with a crop box (the filter widens with the reduction; the same pixels as
torchvision's ``Resize(antialias=True)`` on PIL images; RGBA resized premultiplied).
Point-sampled resizing (``antialias=False``) is separable numpy code with the conventions
of ``torch.nn.functional.interpolate(..., align_corners=False, antialias=False)``: pixel
centres at ``+0.5``, edges replicated, bicubic with ``a = -0.75``.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from PIL import Image

from .image_options import ImageOptions

__all__ = ["crop_box", "fit"]

_PILLOW_FILTERS: Final = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_CUBIC_A: Final = -0.75

Box = tuple[float, float, float, float]


def crop_box(height: int, width: int, options: ImageOptions) -> Box:
    """``(left, top, right, bottom)`` of the source region that becomes the output."""
    assert options.size is not None
    if options.fit == "stretch":
        return 0.0, 0.0, float(width), float(height)
    out_h, out_w = options.size
    scale = max(out_h / height, out_w / width)
    crop_w, crop_h = out_w / scale, out_h / scale
    left, top = max(0.0, (width - crop_w) / 2), max(0.0, (height - crop_h) / 2)
    return left, top, min(float(width), left + crop_w), min(float(height), top + crop_h)


def fit(image: np.ndarray, options: ImageOptions) -> np.ndarray:
    """``image`` (``uint8[H, W, C]``) scaled (and centre-cropped) to ``options.size``."""
    size = options.size
    if size is None or image.shape[:2] == size:
        return image
    box = crop_box(image.shape[0], image.shape[1], options)
    if options.antialias or options.interpolation == "nearest":
        return _pillow_resize(image, size, box, options)
    return _point_sampled(image, size, box, cubic=options.interpolation == "bicubic")


def _pillow_resize(
    image: np.ndarray, size: tuple[int, int], box: Box, options: ImageOptions
) -> np.ndarray:
    out_h, out_w = size
    channels = image.shape[2]
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if channels == 1 else image))
    resized: Any = pil.resize((out_w, out_h), _PILLOW_FILTERS[options.interpolation], box=box)
    out = np.asarray(resized)
    return out[:, :, None] if out.ndim == 2 else out


def _point_sampled(
    image: np.ndarray, size: tuple[int, int], box: Box, *, cubic: bool
) -> np.ndarray:
    """Separable point-sampled resize in float32, rounded back to uint8."""
    left, top, right, bottom = box
    work = image.astype(np.float32)
    alpha = image.shape[2] == 4
    if alpha:  # premultiplied, so transparent colour does not bleed into its neighbours
        work[:, :, :3] *= work[:, :, 3:] / 255.0
    work = _axis(work, 0, size[0], top, bottom - top, cubic)
    work = _axis(work, 1, size[1], left, right - left, cubic)
    if alpha:
        cover = work[:, :, 3:]
        work[:, :, :3] = np.where(cover > 0, work[:, :, :3] * 255.0 / np.maximum(cover, 1e-6), 0)
    out: np.ndarray = np.clip(np.rint(work), 0, 255).astype(np.uint8)
    return out


def _axis(work: np.ndarray, axis: int, out_len: int, start: float, span: float, cubic: bool) -> Any:
    """Resample one axis: output ``i`` samples the source at ``start + (i + .5) * step - .5``."""
    n = work.shape[axis]
    centre = start + (np.arange(out_len, dtype=np.float64) + 0.5) * (span / out_len) - 0.5
    if not cubic:
        centre = np.maximum(centre, 0.0)  # torch's rule for linear modes
    base = np.floor(centre)
    t = centre - base
    first = base.astype(np.int64)
    offsets: tuple[int, ...] = (0, 1)
    weights = [1.0 - t, t]
    if cubic:
        offsets = (-1, 0, 1, 2)
        weights = [_cubic(1.0 + t), _cubic(t), _cubic(1.0 - t), _cubic(2.0 - t)]
    shape = [1, 1, 1]
    shape[axis] = out_len
    out: Any = None
    for offset, weight in zip(offsets, weights, strict=True):
        taken = np.take(work, np.clip(first + offset, 0, n - 1), axis=axis)
        term = taken * weight.astype(np.float32).reshape(shape)
        out = term if out is None else out + term
    return out


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.75`` at distances ``x`` in [0, 2]."""
    a = _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    result: np.ndarray = np.where(x <= 1.0, near, far)
    return result
