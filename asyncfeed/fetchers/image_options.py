"""``ImageOptions``: what a fetched image becomes, validated once with exact messages.

Pure data: no Pillow or simplejpeg import, so a sink can share :func:`check_normalize`. What
each option does to each format is the table in ``docs/images.md``; ``decode.py`` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Final, Literal, cast

from ..errors import ConfigError

__all__ = ["INTERPOLATIONS", "ImageOptions", "Normalize", "check_normalize"]

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]
INTERPOLATIONS: Final = ("nearest", "bilinear", "bicubic", "lanczos", "box")
#: Filters with a point-sampled (``antialias=False``) form; the others are antialiased only.
POINT_SAMPLED: Final = ("nearest", "bilinear", "bicubic")
DTYPES: Final = ("uint8", "float32", "float16")

#: ``(mean, std)``: one value per channel, on the [0, 1] scale (``x / 255``).
Normalize = tuple[tuple[float, ...], tuple[float, ...]]


def _per_channel(value: object) -> tuple[float, ...] | None:
    """``value`` as a tuple of finite floats (a number counts for every channel), or None."""
    items: Sequence[object] = (
        (value,) if isinstance(value, int | float) else cast(Sequence[object], value)
    )
    if isinstance(value, str | bytes) or not isinstance(items, Sequence) or not items:
        return None
    out: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            return None
        out.append(float(item))
    return tuple(out)


def check_normalize(value: object, channels: int | None = None) -> Normalize:
    """``value`` as ``(mean, std)`` tuples of floats, one per channel.

    Each of mean and std is a number (the same for every channel) or a sequence of numbers;
    with ``channels`` given, a sequence must have that many (a single number is repeated).

    Raises:
        ConfigError: ``value`` is not such a pair, a std is not > 0, or the lengths differ.
    """
    pair = cast(Sequence[object], value)
    if isinstance(value, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ConfigError(
            f"normalize must be a (mean, std) pair of numbers or per-channel sequences, "
            f"got {value!r}"
        )
    mean, std = _per_channel(pair[0]), _per_channel(pair[1])
    if mean is None or std is None:
        raise ConfigError(
            f"normalize must be a (mean, std) pair of numbers or per-channel sequences, "
            f"got {value!r}"
        )
    if min(std) <= 0:
        raise ConfigError(f"normalize: every std must be > 0, got {pair[1]!r}")
    n = max(len(mean), len(std))
    if len(mean) not in (1, n) or len(std) not in (1, n):
        raise ConfigError(
            f"normalize: mean has {len(mean)} values and std {len(std)}; give one per channel"
        )
    if channels is not None and n not in (1, channels):
        raise ConfigError(f"normalize: {n} values per channel, but channels={channels}")
    width = n if channels is None else channels
    return mean * (width // len(mean)), std * (width // len(std))


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How a fetched image is decoded, resized and handed out.

    The result is ``uint8[H, W, channels]`` by default; ``dtype``, ``layout`` and
    ``normalize`` turn it into what a model takes, in the decode pool. What comes out of each
    format (16-bit, palette, alpha, 1-bit, CMYK, EXIF orientation, truncated files, bombs)
    is tabled in ``docs/images.md``.

    Args:
        size: ``(height, width)`` of every image, so images of different sizes batch
            together; None keeps each image's own size.
        fit: ``"crop"`` scales the image to cover ``size`` and cuts the centre out (aspect
            ratio kept); ``"stretch"`` scales to ``size`` exactly.
        channels: 3 for RGB, 1 for grayscale (ITU-R 601-2 luma), 4 for RGBA (alpha kept;
            255 where an image has none).
        max_pixels: largest ``width * height`` decoded, checked from the header before any
            pixel is.
        interpolation: the resize filter, by Pillow's names: ``"bilinear"`` (default),
            ``"bicubic"``, ``"lanczos"``, ``"box"``, ``"nearest"``.
        antialias: True (default): the filter widens with the reduction, as Pillow's
            ``resize`` and torchvision's ``Resize(antialias=True)`` do; False: point-sampled,
            as ``torch.nn.functional.interpolate(antialias=False)`` and OpenCV do
            (``"bilinear"``, ``"bicubic"`` or ``"nearest"`` only).
        jpeg: ``"fast"`` (default) lets libjpeg decode a large JPEG at a reduced scale (1/2,
            1/4, 1/8...) no smaller than ``size`` before resizing, several times faster on
            photos; ``"exact"`` decodes at full scale, matching Pillow's full decode and the
            same resize (within one level on average).
        background: ``(r, g, b)`` that transparent pixels are composited over when the
            result has no alpha channel (default white); None drops alpha and keeps the
            colour stored under it, as Pillow's ``convert("RGB")`` does.
        apply_exif_orientation: rotate and mirror as the EXIF orientation tag says (default
            True), so phone photos come out upright.
        dtype: ``"uint8"`` (default), or ``"float32"`` / ``"float16"`` scaled to [0, 1] like
            torchvision's ``ToTensor``. None: uint8, or float32 when ``normalize`` is given.
        layout: ``"HWC"`` (default) or ``"CHW"``.
        normalize: ``(mean, std)``, each a number or one per channel on the [0, 1] scale:
            the result is ``(x / 255 - mean) / std``, as torchvision's ``Normalize`` after
            ``ToTensor``. Needs a float dtype.

    Raises:
        ConfigError: for any invalid argument.
    """

    size: tuple[int, int] | None = None
    fit: Literal["crop", "stretch"] = "crop"
    channels: Literal[1, 3, 4] = 3
    max_pixels: int = 50_000_000
    _: KW_ONLY
    interpolation: Interpolation = "bilinear"
    antialias: bool = True
    jpeg: Literal["fast", "exact"] = "fast"
    background: tuple[int, int, int] | None = (255, 255, 255)
    apply_exif_orientation: bool = True
    dtype: Literal["uint8", "float32", "float16"] | None = None
    layout: Literal["HWC", "CHW"] = "HWC"
    normalize: tuple[Any, Any] | None = None

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
        if self.channels not in (1, 3, 4) or isinstance(self.channels, bool):
            raise ConfigError(f"channels must be 1, 3 or 4, got {self.channels!r}")
        if (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, int)
            or self.max_pixels < 1
        ):
            raise ConfigError(f"max_pixels must be an int >= 1, got {self.max_pixels!r}")
        self._check_resize()
        self._check_colour()
        self._check_output()

    def _check_resize(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            names = ", ".join(repr(n) for n in INTERPOLATIONS)
            raise ConfigError(f"interpolation must be one of {names}, got {self.interpolation!r}")
        if not isinstance(self.antialias, bool):
            raise ConfigError(f"antialias must be a bool, got {self.antialias!r}")
        if not self.antialias and self.interpolation not in POINT_SAMPLED:
            raise ConfigError(
                "antialias=False needs interpolation 'nearest', 'bilinear' or 'bicubic', "
                f"got {self.interpolation!r}"
            )
        if self.jpeg not in ("fast", "exact"):
            raise ConfigError(f"jpeg must be 'fast' or 'exact', got {self.jpeg!r}")

    def _check_colour(self) -> None:
        bg = self.background
        if bg is not None and (
            not isinstance(bg, tuple)
            or len(bg) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in bg)
        ):
            raise ConfigError(
                f"background must be an (r, g, b) tuple of ints in 0..255 or None, got {bg!r}"
            )
        if not isinstance(self.apply_exif_orientation, bool):
            raise ConfigError(
                f"apply_exif_orientation must be a bool, got {self.apply_exif_orientation!r}"
            )

    def _check_output(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(
                f"dtype must be 'uint8', 'float32', 'float16' or None, got {self.dtype!r}"
            )
        if self.layout not in ("HWC", "CHW"):
            raise ConfigError(f"layout must be 'HWC' or 'CHW', got {self.layout!r}")
        if self.normalize is not None:
            if self.dtype == "uint8":
                raise ConfigError("normalize needs a float dtype, got dtype='uint8'")
            object.__setattr__(self, "normalize", check_normalize(self.normalize, self.channels))

    @property
    def output_dtype(self) -> str:
        """The dtype images come out in: ``dtype``, else float32 with ``normalize``, else uint8."""
        if self.dtype is not None:
            return self.dtype
        return "uint8" if self.normalize is None else "float32"

    @property
    def converts(self) -> bool:
        """True when the decoded ``uint8[H, W, C]`` image is changed on the way out."""
        return self.output_dtype != "uint8" or self.layout != "HWC"
