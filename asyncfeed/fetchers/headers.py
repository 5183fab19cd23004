"""What an image's first bytes say: format, width, height and EXIF orientation.

Pure and cheap (no pixel is decoded): the decoder checks ``max_pixels`` from here before it
allocates anything, and picks the JPEG decode scale knowing how the image will be turned.
Only JPEG and PNG are read here; other formats go through Pillow's lazy open.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

__all__ = ["Header", "exif_orientation", "image_size", "read_header"]

_JPEG: Final = b"\xff\xd8\xff"
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_EXIF: Final = b"Exif\x00\x00"
ORIENTATION_TAG: Final = 0x0112


class Header(NamedTuple):
    """An image header: ``format`` ("jpeg" or "png"), stored size, EXIF orientation (1-8)."""

    format: str
    width: int
    height: int
    orientation: int = 1


def read_header(data: bytes) -> Header | None:
    """The header of a JPEG or PNG; None for other formats.

    For a JPEG, the orientation is read from the first EXIF (APP1) segment before the frame
    header; 1 when there is none or it is unreadable.

    Raises:
        ValueError: the header is JPEG or PNG but malformed or truncated.
    """
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG header has no IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        return Header("png", width, height)
    if data.startswith(_JPEG):
        return _jpeg_header(data)
    return None


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from a JPEG or PNG header; None for other formats.

    Raises:
        ValueError: the header is JPEG or PNG but malformed or truncated.
    """
    header = read_header(data)
    return None if header is None else (header.format, header.width, header.height)


def _jpeg_header(data: bytes) -> Header:
    """Walk the JPEG markers up to the first SOFn frame header, noting the EXIF orientation."""
    pos = 2
    end = len(data)
    orientation: int | None = None  # from the first EXIF segment only
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
            return Header("jpeg", width, height, orientation or 1)
        if marker == 0xE1 and orientation is None and data.startswith(_EXIF, pos + 4):
            orientation = exif_orientation(data[pos + 4 + len(_EXIF) : pos + 2 + length]) or 1
        pos += 2 + length
    raise ValueError("JPEG header ends before its frame header (SOF)")


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag (274) of IFD0 in an EXIF block (a TIFF structure); 0 if absent.

    Never raises: a malformed or truncated block, or a value outside 1-8, reads as 0.
    """
    if len(tiff) < 8:
        return 0
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None:
        return 0
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 0
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag != ORIENTATION_TAG:
            continue
        if kind == 3:  # SHORT
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
        elif kind == 4:  # LONG
            (value,) = struct.unpack_from(order + "I", tiff, entry + 8)
        else:
            return 0
        return value if 1 <= value <= 8 else 0
    return 0
