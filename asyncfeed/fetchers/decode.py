"""Image decoding: encoded bytes to the array :class:`ImageOptions` describes.

Pure and synchronous: the fetchers run :func:`decode_image` in a thread pool from
``bridge.py``, never on the event loop. The steps, in order:

1. **Header** (``headers.py``): format, size and EXIF orientation of a JPEG or PNG, else
   Pillow's lazy open; more than ``max_pixels`` raises :class:`DecodeError` before a pixel
   is allocated (a decompression bomb).
2. **Decode**: JPEG with simplejpeg (libjpeg-turbo, GIL released), with ``jpeg="fast"`` at a
   scale reduced by 2x or more inside libjpeg but no smaller than the output; JPEGs it
   refuses, and every other format, with Pillow. Truncated or corrupt data raises
   :class:`DecodeError` (Pillow's ``LOAD_TRUNCATED_IMAGES`` is not used: no half-grey image
   comes out).
3. **Pixels** (``pixels.py``): 16-bit to 8, palette, alpha, 1-bit, CMYK → ``channels``.
4. **Orientation**: EXIF orientation applied (``apply_exif_orientation``).
5. **Fit** (``resize.py``): centre crop or stretch to ``size`` with ``interpolation``.
6. **Output** (``pixels.py``): dtype, layout, normalisation.

``docs/images.md`` tables what comes out of each format.
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import simplejpeg
from PIL import Image

from ..errors import DecodeError
from .headers import Header, image_size, read_header
from .image_options import ImageOptions
from .pixels import UnscaledPixels, orient, pillow_pixels, to_output
from .resize import fit

__all__ = ["ImageOptions", "decode_image", "decode_pixels", "image_size"]

_SIMPLEJPEG_COLORSPACES = {1: "GRAY", 3: "RGB", 4: "RGBA"}
#: ``jpeg="fast"`` reduces the scale only by 2x or more (1/2, 3/8, 1/4, 1/8...): the
#: in-between factors (7/8 to 5/8) save little time and alias strongly (measured: a 500x375
#: photo to 224 at 5/8 differs from the exact path by 8 levels on average, by 0 at full scale).
MIN_FACTOR: Final = 2


def decode_image(data: bytes, options: ImageOptions, source: str) -> np.ndarray:
    """Decode ``data`` into a C-contiguous array as ``options`` describe.

    ``uint8[H, W, channels]`` by default; ``[channels, H, W]`` with ``layout="CHW"``; float32
    or float16 with a float ``dtype`` or ``normalize``.

    Raises:
        DecodeError: not a readable image (unknown format, corrupt, truncated), a pixel
            format with no 8-bit scale, or more than ``options.max_pixels`` pixels; the
            message names ``source``.
    """
    return to_output(decode_pixels(data, options, source), options)


def decode_pixels(data: bytes, options: ImageOptions, source: str) -> np.ndarray:
    """Steps 1-5 of :func:`decode_image`: ``uint8[H, W, channels]``, oriented and fitted.

    Raises:
        DecodeError: as :func:`decode_image`.
    """
    try:
        header = read_header(data)
    except ValueError as exc:
        raise DecodeError(f"cannot decode {source}: {exc}", source=source) from exc
    if header is not None:
        _check_pixels(header.width, header.height, options, source)
    try:
        if header is not None and header.format == "jpeg":
            image = _decode_jpeg(data, header, options, source)
        else:
            image = _decode_pillow(data, header, options, source)
        return np.ascontiguousarray(fit(image, options))
    except DecodeError:
        raise
    except UnscaledPixels as exc:
        raise DecodeError(f"cannot decode {source}: {exc}", source=source) from exc
    except Exception as exc:
        raise DecodeError(
            f"cannot decode {source}: {type(exc).__name__}: {exc}", source=source
        ) from exc


def _check_pixels(width: int, height: int, options: ImageOptions, source: str) -> None:
    if width < 1 or height < 1:
        raise DecodeError(f"cannot decode {source}: image is {width}x{height}", source=source)
    if width * height > options.max_pixels:
        raise DecodeError(
            f"refusing to decode {source}: {width}x{height} = {width * height:,} pixels is more "
            f"than max_pixels={options.max_pixels:,} (a decompression bomb?)",
            source=source,
        )


def _stored_minimum(options: ImageOptions, orientation: int) -> tuple[int, int]:
    """Smallest ``(height, width)`` a reduced-scale JPEG decode may give (0: full scale).

    In the stored orientation: a turned image (EXIF 5-8) needs the output's sides swapped.
    """
    if options.size is None or options.jpeg == "exact":
        return 0, 0
    out_h, out_w = options.size
    return (out_w, out_h) if orientation >= 5 else (out_h, out_w)


def _decode_jpeg(data: bytes, header: Header, options: ImageOptions, source: str) -> np.ndarray:
    orientation = header.orientation if options.apply_exif_orientation else 1
    min_h, min_w = _stored_minimum(options, orientation)
    try:
        image: np.ndarray = simplejpeg.decode_jpeg(
            data,
            colorspace=_SIMPLEJPEG_COLORSPACES[options.channels],
            min_height=min_h,
            min_width=min_w,
            min_factor=MIN_FACTOR,
        )
    except ValueError:  # truncated, or a colour space it cannot convert: Pillow decides
        return _decode_pillow(data, header, options, source)
    if image.ndim == 2:
        image = image[:, :, None]
    return orient(image, orientation)


def _decode_pillow(
    data: bytes, header: Header | None, options: ImageOptions, source: str
) -> np.ndarray:
    apply = options.apply_exif_orientation
    with Image.open(io.BytesIO(data)) as im:
        if header is None:
            _check_pixels(im.width, im.height, options, source)
        orientation = 1
        if im.format == "JPEG":  # simplejpeg refused it (CMYK variants, truncated...)
            orientation = header.orientation if header is not None and apply else 1
            min_h, min_w = _stored_minimum(options, orientation)
            if min_h:
                im.draft(im.mode, (min_w, min_h))  # libjpeg's reduced-scale decode
            im.load()
        else:
            orientation = _pillow_orientation(im, apply)
        pixels = pillow_pixels(im, options)
    return orient(pixels, orientation)


_INVERSE: Final = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def _pillow_orientation(im: Image.Image, apply: bool) -> int:
    """Load ``im``; the orientation still to apply to its pixels.

    Pillow turns a TIFF itself while loading it (and drops the tag): then nothing is left to
    apply, or, with ``apply=False``, the inverse turn restores the stored orientation.
    """
    before = _orientation_tag(im)
    im.load()
    after = _orientation_tag(im)
    if before > 1 and after == 1 and im.format == "TIFF":
        return 1 if apply else _INVERSE[before]
    return after if apply else 1


def _orientation_tag(im: Image.Image) -> int:
    tag = im.getexif().get(0x0112, 1)
    return tag if isinstance(tag, int) and 1 <= tag <= 8 else 1
